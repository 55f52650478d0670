//! The Q4M DSN parser never panics, and what it accepts never shows the password when printed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use reprow::source::q4m::dsn::Dsn;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(dsn) = Dsn::parse(text) {
        let shown = dsn.to_string();
        if let Some(p) = dsn.password.as_deref().filter(|p| p.len() >= 4) {
            // The printed form must not carry the password, unless other parts contain it too.
            let elsewhere = dsn.user.as_deref().is_some_and(|u| u.contains(p))
                || format!("{:?}{:?}", dsn.address, dsn.database).contains(p);
            assert!(elsewhere || !shown.contains(p), "{shown} shows {p}");
        }
    }
});
