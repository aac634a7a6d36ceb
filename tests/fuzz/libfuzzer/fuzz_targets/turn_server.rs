#![no_main]

libfuzzer_sys::fuzz_target!(|script: turn_fuzz::turn_server::Script| {
    turn_fuzz::turn_server::run(&script)
});
