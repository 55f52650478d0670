//! The Q4M DSN parser never panics, and the printed form of what it accepts (logged at start)
//! does not depend on the password.
#![no_main]
use libfuzzer_sys::fuzz_target;
use reprow::source::q4m::dsn::Dsn;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(dsn) = Dsn::parse(text) {
        let mut other = dsn.clone();
        other.password = other.password.map(|p| format!("{p}x"));
        assert_eq!(dsn.to_string(), other.to_string());
        assert_eq!(format!("{dsn:?}"), format!("{other:?}"));
    }
});
