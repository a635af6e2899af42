complete -c wsbridge -l port -d 'TCP port to listen on (0 picks a free port)' -r
complete -c wsbridge -l address -d 'Address to listen on; repeatable' -r
complete -c wsbridge -l unixsocket -d 'Also (or alone) listen on a Unix socket' -r -F
complete -c wsbridge -l unixsocket-mode -d 'Permissions of the --unixsocket file (octal)' -r
complete -c wsbridge -l unixsocket-group -d 'Group of the --unixsocket file' -r
complete -c wsbridge -l redirport -d 'Redirect plain HTTP on PORT to the main port' -r
complete -c wsbridge -l threads -d 'Threads that run connections' -r
complete -c wsbridge -l dir -d 'Run every executable under DIR, by URL path' -r -F
complete -c wsbridge -l framing -d 'Messages map to: line, nul, binary, lenprefix' -r -f -a "line\t''
nul\t''
binary\t''
lenprefix\t''"
complete -c wsbridge -l binary -d 'Raw bytes as binary messages (--framing=binary)' -r -f -a "true\t''
false\t''"
complete -c wsbridge -l passenv -d 'wsbridge\'s variables the program gets' -r
complete -c wsbridge -l passstderr -d 'Send stderr to the client too, as JSON' -r -f -a "true\t''
false\t''"
complete -c wsbridge -l pty -d 'Run the program on a pseudo-terminal' -r -f -a "true\t''
false\t''"
complete -c wsbridge -l subprotocol -d 'WebSocket subprotocols to accept (comma list)' -r
complete -c wsbridge -l shared -d 'One program for all clients' -r
complete -c wsbridge -l sharedqueue -d 'With --shared: output bytes a client may lag' -r
complete -c wsbridge -l closems -d 'Extra ms for each step of the stop ladder' -r
complete -c wsbridge -l origin -d 'Allowed browser origins (comma list, or *)' -r
complete -c wsbridge -l sameorigin -d 'Require a same-origin Origin header' -r -f -a "true\t''
false\t''"
complete -c wsbridge -l maxforks -d 'Most programs at once (0 = unlimited)' -r
complete -c wsbridge -l maxframesize -d 'Largest message in bytes' -r
complete -c wsbridge -l pingms -d 'Ping every MS milliseconds (0 = off)' -r
complete -c wsbridge -l ssl -d 'Serve TLS (wss://); default port 443' -r -f -a "true\t''
false\t''"
complete -c wsbridge -l sslcert -d 'TLS certificate chain (PEM)' -r -F
complete -c wsbridge -l sslkey -d 'TLS private key (PEM)' -r -F
complete -c wsbridge -l sslca -d 'Require client certificates from these CAs' -r -F
complete -c wsbridge -l staticdir -d 'Serve DIR\'s files to plain HTTP requests' -r -F
complete -c wsbridge -l cgidir -d 'Run CGI scripts from DIR for plain requests' -r -F
complete -c wsbridge -l cgitimeout -d 'Longest CGI run in seconds' -r
complete -c wsbridge -l devconsole -d 'A page for trying the endpoint in a browser' -r -f -a "true\t''
false\t''"
complete -c wsbridge -l header -d 'Extra header on every response; repeatable' -r
complete -c wsbridge -l header-ws -d 'Extra header on upgrade responses; repeatable' -r
complete -c wsbridge -l header-http -d 'Extra header on plain HTTP responses; repeatable' -r
complete -c wsbridge -l trusted-proxy -d 'Trust forwarding headers from CIDR' -r
complete -c wsbridge -l upstream -d 'Forward other plain HTTP to this server' -r
complete -c wsbridge -l connect -d 'Connect out to a ws:// or wss:// URL' -r
complete -c wsbridge -l proxy -d 'HTTP proxy to tunnel through, or none' -r
complete -c wsbridge -l reconnect -d 'Connect again after every ending' -r -f -a "true\t''
false\t''"
complete -c wsbridge -l insecure -d 'Do not check the server\'s certificate' -r -f -a "true\t''
false\t''"
complete -c wsbridge -l connect-timeout -d 'Seconds each step of connecting may take' -r
complete -c wsbridge -l loglevel -d 'Log level (RUST_LOG overrides)' -r -f -a "trace\t''
debug\t''
access\t''
info\t''
error\t''
fatal\t''
none\t''"
complete -c wsbridge -l logformat -d 'Log line format: text or json' -r -f -a "text\t''
json\t''"
complete -c wsbridge -l metrics -d 'Serve Prometheus metrics on ADDR (IP:PORT)' -r
complete -c wsbridge -l htpasswd -d 'Basic auth with the users of FILE' -r -F
complete -c wsbridge -l realm -d 'Realm of --htpasswd\'s 401 answers' -r
complete -c wsbridge -l authcmd -d 'Auth hook run before each upgrade' -r
complete -c wsbridge -l authurl -d 'Auth service asked before each upgrade' -r
complete -c wsbridge -l authcmd-http -d 'Run the auth hook for plain HTTP too' -r -f -a "true\t''
false\t''"
complete -c wsbridge -l authtimeout -d 'Longest auth check, then 503' -r
complete -c wsbridge -l authmax -d 'Most auth checks at once' -r
complete -c wsbridge -l maxperclient -d 'Most sessions one client may have at once' -r
complete -c wsbridge -l ratelimit -d 'Messages a second read from each client' -r
complete -c wsbridge -l idletimeout -d 'Close a session idle for DURATION' -r
complete -c wsbridge -l broker -d 'NATS servers for --shared across instances' -r
complete -c wsbridge -l topic -d 'Topic that ties producer and edges together' -r
complete -c wsbridge -l broker-ca -d 'CA certificates (PEM) for a tls:// broker' -r -F
complete -c wsbridge -l broker-creds -d 'Broker credentials: USER:PASSWORD or TOKEN' -r -F
complete -c wsbridge -l compress -d 'Use permessage-deflate' -r -f -a "true\t''
false\t''"
complete -c wsbridge -l compress-window-bits -d 'Largest window, in bits' -r
complete -c wsbridge -l compress-no-context-takeover -d 'Compress each message on its own' -r -f -a "true\t''
false\t''"
complete -c wsbridge -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wsbridge -s V -l version -d 'Print version'
