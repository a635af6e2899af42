_wsbridge() {
    local i cur prev opts cmd
    COMPREPLY=()
    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
        cur="$2"
    else
        cur="${COMP_WORDS[COMP_CWORD]}"
    fi
    prev="$3"
    cmd=""
    opts=""

    for i in "${COMP_WORDS[@]:0:COMP_CWORD}"
    do
        case "${cmd},${i}" in
            ",$1")
                cmd="wsbridge"
                ;;
            *)
                ;;
        esac
    done

    case "${cmd}" in
        wsbridge)
            opts="-h -V --port --address --unixsocket --unixsocket-mode --unixsocket-group --redirport --threads --dir --framing --binary --passenv --passstderr --pty --subprotocol --shared --sharedqueue --closems --origin --sameorigin --maxforks --maxframesize --pingms --ssl --sslcert --sslkey --sslca --staticdir --cgidir --cgitimeout --devconsole --header --header-ws --header-http --trusted-proxy --upstream --connect --proxy --reconnect --insecure --connect-timeout --loglevel --logformat --metrics --htpasswd --realm --authcmd --authurl --authcmd-http --authtimeout --authmax --maxperclient --ratelimit --idletimeout --broker --topic --broker-ca --broker-creds --compress --compress-window-bits --compress-no-context-takeover --help --version"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 1 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --port)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --address)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --unixsocket)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --unixsocket-mode)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --unixsocket-group)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --redirport)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --threads)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --dir)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --framing)
                    COMPREPLY=($(compgen -W "line nul binary lenprefix" -- "${cur}"))
                    return 0
                    ;;
                --binary)
                    COMPREPLY=($(compgen -W "true false" -- "${cur}"))
                    return 0
                    ;;
                --passenv)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --passstderr)
                    COMPREPLY=($(compgen -W "true false" -- "${cur}"))
                    return 0
                    ;;
                --pty)
                    COMPREPLY=($(compgen -W "true false" -- "${cur}"))
                    return 0
                    ;;
                --subprotocol)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --shared)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --sharedqueue)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --closems)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --origin)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --sameorigin)
                    COMPREPLY=($(compgen -W "true false" -- "${cur}"))
                    return 0
                    ;;
                --maxforks)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --maxframesize)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --pingms)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --ssl)
                    COMPREPLY=($(compgen -W "true false" -- "${cur}"))
                    return 0
                    ;;
                --sslcert)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --sslkey)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --sslca)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --staticdir)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --cgidir)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --cgitimeout)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --devconsole)
                    COMPREPLY=($(compgen -W "true false" -- "${cur}"))
                    return 0
                    ;;
                --header)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --header-ws)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --header-http)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --trusted-proxy)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --upstream)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --connect)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --proxy)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --reconnect)
                    COMPREPLY=($(compgen -W "true false" -- "${cur}"))
                    return 0
                    ;;
                --insecure)
                    COMPREPLY=($(compgen -W "true false" -- "${cur}"))
                    return 0
                    ;;
                --connect-timeout)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --loglevel)
                    COMPREPLY=($(compgen -W "trace debug access info error fatal none" -- "${cur}"))
                    return 0
                    ;;
                --logformat)
                    COMPREPLY=($(compgen -W "text json" -- "${cur}"))
                    return 0
                    ;;
                --metrics)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --htpasswd)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --realm)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --authcmd)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --authurl)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --authcmd-http)
                    COMPREPLY=($(compgen -W "true false" -- "${cur}"))
                    return 0
                    ;;
                --authtimeout)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --authmax)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --maxperclient)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --ratelimit)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --idletimeout)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --broker)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --topic)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --broker-ca)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --broker-creds)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --compress)
                    COMPREPLY=($(compgen -W "true false" -- "${cur}"))
                    return 0
                    ;;
                --compress-window-bits)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --compress-no-context-takeover)
                    COMPREPLY=($(compgen -W "true false" -- "${cur}"))
                    return 0
                    ;;
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
    esac
}

if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _wsbridge -o nosort -o bashdefault -o default wsbridge
else
    complete -F _wsbridge -o bashdefault -o default wsbridge
fi
