//! A CSV table, read for training (label column last or named, names free or the model's) and
//! for prediction, then standardised as `--standardize` does.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let names = ["a".to_string(), "b".to_string()];
    for (label, known) in [(None, None), (Some("y"), Some(&names[..]))] {
        if let Ok(t) = gpumlp::csv_table::read("fuzz.csv", bytes, label, known) {
            if let Ok(mut s) = gpumlp::Splits::cut("fuzz.csv", t.data, 0.5, None, t.names) {
                let _ = s.standardize(None);
            }
        }
    }
    let _ = gpumlp::csv_table::read_features("fuzz.csv", bytes, 3, None);
});
