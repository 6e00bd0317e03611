use super::sysexits::*;
use super::*;

#[test]
fn codes_parse_and_print() {
    assert_eq!(EnhancedCode::parse("5.1.1"), Some(EnhancedCode(5, 1, 1)));
    assert_eq!(EnhancedCode::parse("4.4.7"), Some(EnhancedCode(4, 4, 7)));
    assert_eq!(EnhancedCode::parse("2.0.0").unwrap().to_string(), "2.0.0");
    assert_eq!(EnhancedCode(5, 7, 509).to_string(), "5.7.509");
    for bad in [
        "", "5", "5.1", "5.1.1.1", "9.1.1", "3.0.0", "5.1000.0", "5.1.1000", "5..1", "+5.1.1",
        "5.1.x", " 5.1.1",
    ] {
        assert_eq!(EnhancedCode::parse(bad), None, "{bad:?}");
    }
    assert_eq!(EnhancedCode::new(9, 0, 0), None);
    assert_eq!(EnhancedCode(4, 4, 7).permanent(), EnhancedCode(5, 4, 7));
}

#[test]
fn class_must_agree_with_the_code() {
    let s = DeliveryStatus::new(StatusClass::Permanent, EnhancedCode(5, 1, 1), "no").unwrap();
    assert!(s.is_permanent());
    assert_eq!(s.to_string(), "5.1.1 no");
    assert_eq!(
        DeliveryStatus::new(StatusClass::Success, EnhancedCode(5, 1, 1), ""),
        Err(StatusError::ClassMismatch(
            StatusClass::Success,
            EnhancedCode(5, 1, 1)
        ))
    );
    assert_eq!(
        DeliveryStatus::new(StatusClass::Permanent, EnhancedCode(9, 1, 1), ""),
        Err(StatusError::BadCode(EnhancedCode(9, 1, 1)))
    );
    assert_eq!(
        DeliveryStatus::from_code(EnhancedCode(4, 2, 2), "full")
            .unwrap()
            .class(),
        StatusClass::Temporary
    );
    assert_eq!(
        DeliveryStatus::temporary(3, 0, "x").code(),
        EnhancedCode(4, 3, 0)
    );
    assert_eq!(DeliveryStatus::sent("ok").code(), EnhancedCode(2, 0, 0));
}

#[test]
fn smtp_reply_codes() {
    let c = |s: DeliveryStatus| s.reply_code();
    assert_eq!(c(DeliveryStatus::sent("")), 250);
    assert_eq!(c(DeliveryStatus::temporary(3, 0, "")), 451);
    assert_eq!(c(DeliveryStatus::temporary(2, 2, "")), 452);
    assert_eq!(c(DeliveryStatus::permanent(1, 1, "")), 550);
    assert_eq!(c(DeliveryStatus::permanent(3, 4, "")), 552);
    assert_eq!(c(DeliveryStatus::permanent(7, 1, "")), 554);
    assert_eq!(c(DeliveryStatus::permanent(3, 0, "")), 554);
}

#[test]
fn sysexits_both_ways() {
    assert_eq!(to_status(0, "ok").code(), EnhancedCode(2, 0, 0));
    assert_eq!(to_status(EX_TEMPFAIL, "").class(), StatusClass::Temporary);
    assert_eq!(to_status(EX_OSERR, "").code(), EnhancedCode(4, 3, 0));
    assert_eq!(to_status(EX_NOUSER, "").code(), EnhancedCode(5, 1, 1));
    assert_eq!(to_status(EX_CONFIG, "").code(), EnhancedCode(5, 3, 5));
    assert_eq!(to_status(1, "").code(), EnhancedCode(5, 3, 0));
    assert_eq!(describe(1).1, "unknown mail system error");
    assert_eq!(describe(EX_CANTCREAT).1, "can't create user output file");
    // Every row whose code is unique in the table maps back to itself.
    for (st, code, _) in TABLE {
        let unique = TABLE.iter().filter(|(_, c, _)| c == code).count() == 1;
        let s = DeliveryStatus::from_code(*code, "").unwrap();
        if unique && s.is_permanent() {
            assert_eq!(exit_code(&s), *st, "{code}");
        }
    }
    assert_eq!(exit_code(&DeliveryStatus::sent("")), EX_OK);
    assert_eq!(exit_code(&DeliveryStatus::temporary(3, 0, "")), EX_TEMPFAIL);
    assert_eq!(
        exit_code(&DeliveryStatus::permanent(3, 0, "")),
        EX_UNAVAILABLE
    );
    assert_eq!(exit_code(&DeliveryStatus::permanent(7, 1, "")), EX_NOPERM);
    assert_eq!(exit_code(&DeliveryStatus::permanent(6, 3, "")), EX_DATAERR);
}
