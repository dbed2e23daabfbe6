//! Token scopes as clients send them (`scope=repository:team/app:pull,push`): parsing any
//! input must not panic, and whatever parses must print back to a scope that parses to
//! itself and grants no more than was asked.

#![no_main]

use berth_oci::scope::Scope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(scope) = Scope::parse(text) {
        let printed = scope.to_string();
        assert_eq!(Scope::parse(&printed).as_ref(), Some(&scope), "{text:?} -> {printed:?}");
        if let Scope::Repository { actions, .. } = &scope {
            // Every granted action was named in the input (or `*` was).
            for name in actions.names() {
                assert!(text.contains(name) || text.contains('*'), "{text:?} grants {name}");
            }
        }
    }
    let all = Scope::parse_all(text.split('&'));
    for s in &all {
        assert_eq!(Scope::parse(&s.to_string()).as_ref(), Some(s));
    }
});
