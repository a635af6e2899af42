use super::*;

const OURS: Compress = Compress {
    window_bits: 15,
    no_context_takeover: false,
};

fn dir(no_context_takeover: bool, window_bits: u8) -> Direction {
    Direction {
        no_context_takeover,
        window_bits,
    }
}

fn answer(offer: &str, ours: &Compress) -> Option<String> {
    accept([offer], ours).map(|(_, a)| a)
}

#[test]
fn plain_offer_is_answered_plainly() {
    let (agreed, a) = accept(["permessage-deflate"], &OURS).unwrap();
    assert_eq!(a, "permessage-deflate");
    assert_eq!(
        agreed,
        Agreed {
            ours: dir(false, 15),
            theirs: dir(false, 15)
        }
    );
}

#[test]
fn browser_offer_with_bare_client_max_window_bits() {
    // Chromium and Firefox send this.
    let (agreed, a) = accept(["permessage-deflate; client_max_window_bits"], &OURS).unwrap();
    assert_eq!(a, "permessage-deflate");
    assert_eq!(agreed.theirs, dir(false, 15));
}

#[test]
fn every_parameter_is_honoured() {
    let (agreed, a) = accept(
        ["permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12"],
        &OURS,
    )
    .unwrap();
    assert_eq!(
        a,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12"
    );
    assert_eq!(
        agreed,
        Agreed {
            ours: dir(true, 10),
            theirs: dir(true, 12)
        }
    );
}

#[test]
fn operator_limits_narrow_the_answer() {
    let ours = Compress {
        window_bits: 10,
        no_context_takeover: true,
    };
    let (agreed, a) = accept(["permessage-deflate; client_max_window_bits"], &ours).unwrap();
    assert_eq!(
        a,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=10"
    );
    assert_eq!(
        agreed,
        Agreed {
            ours: dir(true, 10),
            theirs: dir(true, 10)
        }
    );
    // The client cannot be asked for a smaller window it did not offer to limit.
    let (agreed, a) = accept(["permessage-deflate"], &ours).unwrap();
    assert_eq!(
        a,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );
    assert_eq!(agreed.theirs.window_bits, 15);
    assert_eq!(agreed.ours.window_bits, 10);
}

#[test]
fn unusable_offers_are_declined_and_the_next_is_taken() {
    for bad in [
        "permessage-deflate; foo",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=09",
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; client_max_window_bits=1x",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; =3",
        "x-webkit-deflate-frame",
    ] {
        assert_eq!(answer(bad, &OURS), None, "{bad}");
        let two = format!("{bad}, permessage-deflate; client_max_window_bits");
        assert_eq!(answer(&two, &OURS).as_deref(), Some("permessage-deflate"), "{two}");
    }
}

#[test]
fn quoted_values_and_several_headers() {
    let a = accept(
        ["foo; a=\"x,y\"", "permessage-deflate; server_max_window_bits=\"12\""],
        &OURS,
    );
    assert_eq!(a.unwrap().1, "permessage-deflate; server_max_window_bits=12");
    assert_eq!(
        answer("permessage-deflate; server_max_window_bits=\"1 2\"", &OURS),
        None
    );
}

#[test]
fn kosoku_13_7_takes_the_first_offer() {
    let offers = "permessage-deflate; client_no_context_takeover; client_max_window_bits; server_no_context_takeover; server_max_window_bits=9, \
                  permessage-deflate; client_no_context_takeover; client_max_window_bits; server_no_context_takeover, \
                  permessage-deflate; client_no_context_takeover; client_max_window_bits";
    let (agreed, _) = accept([offers], &OURS).unwrap();
    assert_eq!(agreed.ours, dir(true, 9));
}

#[test]
fn client_offer_and_answers() {
    assert_eq!(offer(&OURS), "permessage-deflate; client_max_window_bits");
    let small = Compress {
        window_bits: 11,
        no_context_takeover: true,
    };
    assert_eq!(
        offer(&small),
        "permessage-deflate; client_max_window_bits; server_max_window_bits=11; server_no_context_takeover; client_no_context_takeover"
    );
    assert_eq!(check_answer([], &OURS), Ok(None));
    assert_eq!(
        check_answer(["permessage-deflate"], &OURS),
        Ok(Some(Agreed {
            ours: dir(false, 15),
            theirs: dir(false, 15)
        }))
    );
    assert_eq!(
        check_answer(
            ["permessage-deflate; server_no_context_takeover; client_max_window_bits=10"],
            &OURS
        ),
        Ok(Some(Agreed {
            ours: dir(false, 10),
            theirs: dir(true, 15)
        }))
    );
    assert_eq!(
        check_answer(["permessage-deflate; server_max_window_bits=11"], &small),
        Ok(Some(Agreed {
            ours: dir(true, 11),
            theirs: dir(false, 11)
        }))
    );
}

#[test]
fn client_refuses_a_bad_answer() {
    let bad = |a: &str| check_answer([a], &OURS).unwrap_err();
    assert!(matches!(bad("x-other"), AnswerError::NotOffered(_)));
    assert!(matches!(
        bad("permessage-deflate, permessage-deflate"),
        AnswerError::NotOffered(_)
    ));
    assert!(matches!(bad("permessage-deflate; foo"), AnswerError::Param { .. }));
    assert!(matches!(
        bad("permessage-deflate; client_max_window_bits"),
        AnswerError::Param { .. }
    ));
    assert!(matches!(
        bad("permessage-deflate; client_max_window_bits=8"),
        AnswerError::Window(8)
    ));
    assert!(matches!(
        bad("permessage-deflate; server_max_window_bits=20"),
        AnswerError::Param { .. }
    ));
    let small = Compress {
        window_bits: 11,
        no_context_takeover: false,
    };
    assert!(check_answer(["permessage-deflate; server_max_window_bits=12"], &small).is_err());
    let e = bad("permessage-deflate; foo").to_string();
    assert!(e.contains("unknown parameter foo"), "{e}");
}

#[test]
fn shared_imposes_server_no_context_takeover_only() {
    let (agreed, a) = accept_shared(["permessage-deflate; client_max_window_bits"], &OURS).unwrap();
    assert_eq!(a, "permessage-deflate; server_no_context_takeover");
    assert_eq!(
        agreed,
        Agreed {
            ours: dir(true, 15),
            theirs: dir(false, 15)
        }
    );
    let (agreed, a) = accept_shared(["permessage-deflate; server_max_window_bits=10"], &OURS).unwrap();
    assert_eq!(
        a,
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=10"
    );
    assert_eq!(agreed.ours, dir(true, 10));
    // Asked for already: said once.
    let (_, a) = accept_shared(["permessage-deflate; server_no_context_takeover"], &OURS).unwrap();
    assert_eq!(a, "permessage-deflate; server_no_context_takeover");
    assert!(accept_shared(["x-webkit-deflate-frame"], &OURS).is_none());
}

#[cfg(feature = "compress")]
#[test]
fn only_clients_with_the_hubs_window_share_the_compressed_form() {
    let offer = |o: &str, ours: &Compress| precompress(accept_shared([o], ours).map(|(a, _)| a), Some(ours));
    let hub = precompress(
        accept_shared(["permessage-deflate"], &OURS).map(|(a, _)| a),
        Some(&OURS),
    );
    assert_eq!(hub.map(|p| p.window_bits), Some(15));
    assert!(offer("permessage-deflate; server_max_window_bits=10", &OURS).is_none());
    let small = Compress {
        window_bits: 10,
        no_context_takeover: false,
    };
    assert_eq!(offer("permessage-deflate", &small).map(|p| p.window_bits), Some(10));
    assert_eq!(
        offer("permessage-deflate; server_max_window_bits=12", &small).map(|p| p.window_bits),
        Some(10)
    );
    assert!(offer("permessage-deflate; server_max_window_bits=9", &small).is_none());
    // Outside --shared a context-keeping client never does; without the extension no one.
    assert!(precompress(accept(["permessage-deflate"], &OURS).map(|(a, _)| a), Some(&OURS)).is_none());
    assert!(precompress(None, Some(&OURS)).is_none());
}
