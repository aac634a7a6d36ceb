#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| turn_fuzz::channel_data::run(data));
