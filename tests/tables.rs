//! Data that is not 28x28 digits: CSV tables and NumPy arrays read into samples of any width
//! and class count, each malformed file refused with an error naming the file, the line or
//! array, and what is wrong; and the real Iris and Wine tables training to what an MLP reaches
//! on them.

mod common;

use gpumlp::csv_table;
use gpumlp::dataset::Splits;
use gpumlp::numpy::{self, encode_npy, encode_npz, Values};
use gpumlp::{Checkpoint, CpuBackend, DataSpec, Features, Input, TrainConfig, Trainer};
use pollster::block_on;

const IRIS: &[u8] = include_bytes!("../data/tables/iris.csv");
const WINE: &[u8] = include_bytes!("../data/tables/wine.csv");

fn csv_err(text: &str, label: Option<&str>) -> String {
    csv_table::read("t.csv", text.as_bytes(), label, None)
        .expect_err("must be refused")
        .to_string()
}

#[test]
fn the_real_tables_read_with_their_headers_names_and_classes() {
    let iris = csv_table::read("iris.csv", IRIS, None, None).unwrap();
    assert_eq!((iris.data.len(), iris.data.width), (150, 4));
    assert_eq!(
        iris.names.as_deref().unwrap(),
        ["setosa", "versicolor", "virginica"]
    );
    assert_eq!(iris.header.as_ref().unwrap()[4], "species");
    let mut counts = [0; 3];
    iris.data
        .labels
        .iter()
        .for_each(|&l| counts[l as usize] += 1);
    assert_eq!(counts, [50, 50, 50]);
    let wine = csv_table::read("wine.csv", WINE, Some("class"), None).unwrap();
    assert_eq!(
        (wine.data.len(), wine.data.width, wine.data.classes()),
        (178, 13, 3)
    );
    assert!(wine.names.is_none(), "numeric labels are class numbers");
}

#[test]
fn csv_labels_are_numbers_or_names_in_any_column() {
    // No header: the last column is the label.
    let t = csv_table::read("t.csv", b"1,2,0\n3,4,2\n", None, None).unwrap();
    assert_eq!(t.data.features, Features::Floats(vec![1.0, 2.0, 3.0, 4.0]));
    assert_eq!((t.data.labels.clone(), t.header), (vec![0, 2], None));
    // A named label column first; names sorted into classes.
    let t = csv_table::read(
        "t.csv",
        b"kind,a,b\ncat,1,2\nant,3,4\ncat,5,6\n",
        Some("kind"),
        None,
    )
    .unwrap();
    assert_eq!(t.names.as_deref().unwrap(), ["ant", "cat"]);
    assert_eq!(t.data.labels, vec![1, 0, 1]);
    assert_eq!(
        t.data.features,
        Features::Floats(vec![1., 2., 3., 4., 5., 6.])
    );
    // Read for a model with names: its order, whatever the file holds.
    let known = ["zebra".to_string(), "cat".to_string(), "ant".to_string()];
    let t = csv_table::read("t.csv", b"a,b,kind\n1,2,cat\n3,4,ant\n", None, Some(&known)).unwrap();
    assert_eq!(t.data.labels, vec![1, 2]);
    // Prediction rows with or without the label column.
    assert_eq!(
        csv_table::read_features("p.csv", b"a,b,kind\n1,2,cat\n", 2, None).unwrap(),
        [1.0, 2.0]
    );
    assert_eq!(
        csv_table::read_features("p.csv", b"1,2\n3,4\n", 2, None).unwrap(),
        [1.0, 2.0, 3.0, 4.0]
    );
}

#[test]
fn every_kind_of_bad_csv_is_named_with_its_line_and_column() {
    let cases = [
        (
            "a,b,y\n1,2,0\n3,0\n",
            None,
            "line 3: 2 columns where the first row has 3",
        ),
        (
            "a,b,y\n1,,0\n",
            None,
            "line 2, column b: the value is missing",
        ),
        (
            "1,2,0\n1,x,0\n",
            None,
            "line 2, column 2: 'x' is not a number",
        ),
        (
            "a,b,y\n1,NaN,0\n",
            None,
            "line 2, column b: NaN is not a finite number",
        ),
        (
            "a,b,y\n1,inf,0\n",
            None,
            "line 2, column b: inf is not a finite number",
        ),
        (
            "a,b,y\n1,2,\n3,4,x\n",
            None,
            "line 2, column y: the label is missing",
        ),
        (
            "a,b,y\n1,2,70000\n",
            None,
            "label 70000 is past the 65536 classes",
        ),
        ("a,b,y\n", None, "no rows of data"),
        ("", None, "the file is empty"),
        (
            "y\n1\n",
            None,
            "a label column and at least one feature column",
        ),
        (
            "a,b,y\n1,2,0\n",
            Some("kind"),
            "no column named kind in the header (a, b, y)",
        ),
        (
            "1,2,0\n",
            Some("y"),
            "the first row is numbers, not a header",
        ),
    ];
    for (text, label, want) in cases {
        let e = csv_err(text, label);
        assert!(
            e.starts_with("t.csv: ") && e.contains(want),
            "{text:?}: {e}"
        );
    }
    let e = csv_table::read("t.csv", b"a,y\n1,dog\n", None, Some(&["cat".into()]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("'dog' is not one of the model's classes"), "{e}");
    let e = csv_table::read_features("p.csv", b"1,2,3,4\n", 2, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("rows of 4 columns; the model reads 2 features"),
        "{e}"
    );
}

fn floats(v: &[f32]) -> Values {
    Values::Floats(v.to_vec())
}

#[test]
fn npz_archives_and_npy_arrays_give_samples_of_their_trailing_dimensions() {
    // Keras's layout: u8 images [n, 4, 3] and labels, stored and deflated.
    let images: Vec<u8> = (0..5 * 12).map(|i| i as u8).collect();
    let x = encode_npy(&[5, 4, 3], &Values::Bytes(images.clone()));
    let y = encode_npy(&[5], &Values::Ints(vec![0, 1, 2, 1, 0]));
    let tx = encode_npy(&[2, 4, 3], &Values::Bytes(images[..24].to_vec()));
    let ty = encode_npy(&[2, 1], &Values::Bytes(vec![2, 2]));
    for compressed in [false, true] {
        let npz = encode_npz(
            &[
                ("x_train", x.clone()),
                ("y_train", y.clone()),
                ("x_test", tx.clone()),
                ("y_test", ty.clone()),
            ],
            compressed,
        );
        let splits = numpy::splits("k.npz", numpy::read_npz("k.npz", &npz).unwrap(), 0.2).unwrap();
        assert_eq!(splits.train.features, Features::Bytes(images.clone()));
        assert_eq!((splits.train.width, splits.test.len()), (12, 2));
        assert_eq!(splits.spec.image, Some([4, 3, 1]));
        assert_eq!((splits.spec.classes, splits.spec.input), (3, Input::Bytes));
        assert_eq!(splits.spec.read.test_fraction, None);
    }
    // One set of f64-like floats [n, 2, 3] and labels, cut by the test fraction.
    let values: Vec<f32> = (0..10 * 6).map(|i| i as f32 * 0.5).collect();
    let arrays = vec![
        numpy::read_npy("x.npy", "x", &encode_npy(&[10, 2, 3], &floats(&values))).unwrap(),
        numpy::read_npy(
            "y.npy",
            "y",
            &encode_npy(&[10], &Values::Ints((0..10).map(|i| i % 4).collect())),
        )
        .unwrap(),
    ];
    let splits = numpy::splits("arrays", arrays, 0.3).unwrap();
    assert_eq!(
        (splits.train.len(), splits.test.len(), splits.train.width),
        (7, 3, 6)
    );
    assert_eq!(
        (splits.spec.input, splits.spec.image),
        (Input::Floats, None)
    );
    assert_eq!(splits.spec.read.test_fraction, Some(0.3));
    // The same cut again: seeded, not random.
    let again = numpy::splits(
        "arrays",
        vec![
            numpy::read_npy("x.npy", "x", &encode_npy(&[10, 2, 3], &floats(&values))).unwrap(),
            numpy::read_npy(
                "y.npy",
                "y",
                &encode_npy(&[10], &Values::Ints((0..10).map(|i| i % 4).collect())),
            )
            .unwrap(),
        ],
        0.3,
    )
    .unwrap();
    assert_eq!(again.test, splits.test);
}

#[test]
fn every_kind_of_bad_array_is_named_with_what_is_wrong() {
    let good = encode_npy(&[3, 2], &floats(&[1., 2., 3., 4., 5., 6.]));
    let npy_err = |bytes: &[u8]| {
        numpy::read_npy("a.npy", "x", bytes)
            .unwrap_err()
            .to_string()
    };
    // Truncated data, trailing data, a header claiming terabytes.
    let e = npy_err(&good[..good.len() - 4]);
    assert!(
        e.contains("claims [3, 2] of <f4 (24 bytes) but 20 bytes follow"),
        "{e}"
    );
    let mut extra = good.clone();
    extra.extend_from_slice(&[0; 8]);
    assert!(npy_err(&extra).contains("but 32 bytes follow"));
    // Shapes claiming more than the 2^28 values read, whichever way the key is quoted and
    // with a zero first dimension hiding the product (found in review).
    let huge = encode_npy(&[1 << 40, 1 << 20], &floats(&[]));
    let mut double = huge.clone();
    let at = double.windows(7).position(|w| w == b"'shape'").unwrap();
    double[at..at + 7].copy_from_slice(b"\"shape\"");
    let zero = encode_npy(&[0, 1 << 40, 1 << 40], &floats(&[]));
    for bytes in [huge.clone(), double, zero] {
        let e = npy_err(&bytes);
        assert!(e.contains("values gpumlp reads"), "{e}");
    }
    assert!(npy_err(b"not numpy").contains("not a NumPy .npy array"));
    // Fortran order and strings.
    let edit = |from: &[u8], to: &[u8]| {
        let mut b = good.clone();
        let at = b.windows(from.len()).position(|w| w == from).unwrap();
        b[at..at + from.len()].copy_from_slice(to);
        b
    };
    let e = npy_err(&edit(b"False", b"True "));
    assert!(e.contains("Fortran order"), "{e}");
    let e = npy_err(&edit(b"<f4", b"<U1"));
    assert!(
        e.contains("gpumlp reads integers, floats and booleans"),
        "{e}"
    );
    // NaN features, float or out-of-range labels, counts that disagree, missing arrays.
    let pair = |x: Vec<u8>, y: Vec<u8>| {
        let arrays = vec![
            numpy::read_npy("f", "x", &x).unwrap(),
            numpy::read_npy("f", "y", &y).unwrap(),
        ];
        numpy::splits("d.npz", arrays, 0.2).unwrap_err().to_string()
    };
    let labels = encode_npy(&[3], &Values::Ints(vec![0, 1, 1]));
    let e = pair(
        encode_npy(&[3, 2], &floats(&[1., f32::NAN, 3., 4., 5., 6.])),
        labels.clone(),
    );
    assert!(e.contains("feature 1 of sample 0 is NaN"), "{e}");
    let e = pair(good.clone(), encode_npy(&[3], &floats(&[0., 1., 1.])));
    assert!(e.contains("labels y are floats"), "{e}");
    let e = pair(
        good.clone(),
        encode_npy(&[3], &Values::Ints(vec![0, -1, 1])),
    );
    assert!(e.contains("label -1 at index 1 of y"), "{e}");
    let e = pair(good.clone(), encode_npy(&[2], &Values::Ints(vec![0, 1])));
    assert!(e.contains("3 samples but 2 labels"), "{e}");
    let e = pair(good.clone(), encode_npy(&[3, 2], &Values::Ints(vec![0; 6])));
    assert!(e.contains("expected [n] or [n, 1]"), "{e}");
    let e = numpy::splits("d.npz", vec![], 0.2).unwrap_err().to_string();
    assert!(e.contains("no arrays named x_train and y_train"), "{e}");
    // An archive that is not one, and one cut short.
    let npz = encode_npz(&[("x", good.clone()), ("y", labels)], true);
    let e = numpy::read_npz("d.npz", &npz[..npz.len() / 2])
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("d.npz: "), "{e}");
    let e = numpy::read_npz("d.npz", b"PK not a zip")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a NumPy .npz archive"), "{e}");
}

#[test]
fn limits_are_stated_and_refused_beyond() {
    assert!(gpumlp::Architecture::new(100_000, &[8], 1_000).is_ok());
    let e = gpumlp::Architecture::new(10, &[8], 70_000)
        .unwrap_err()
        .to_string();
    assert!(e.contains("2 to 65536 classes"), "{e}");
    let e = gpumlp::Architecture::new(2_000_000, &[8], 3)
        .unwrap_err()
        .to_string();
    assert!(e.contains("1 to 1048576 inputs"), "{e}");
    let mut spec = DataSpec::mnist();
    spec.classes = 1;
    assert!(spec
        .check_limits("d")
        .unwrap_err()
        .to_string()
        .contains("1 classes"));
}

/// The table read, standardised, and trained on the CPU with `hidden` for `epochs`: the final
/// test accuracy and the run's checkpoint.
fn train_table(name: &str, bytes: &[u8], epochs: usize) -> (f64, Checkpoint, Splits) {
    let table = csv_table::read(name, bytes, None, None).unwrap();
    let mut data = Splits::cut(name, table.data, 0.2, None, table.names).unwrap();
    data.standardize(None).unwrap();
    let config = TrainConfig {
        hidden: vec![32],
        epochs,
        batch: 16,
        ..TrainConfig::default()
    };
    let arch = config.architecture(&data.spec).unwrap();
    let mut t = Trainer::new(config, Box::new(CpuBackend::new(&arch)), &data).unwrap();
    let mut accuracy = 0.0;
    while !t.finished() {
        block_on(t.train_epoch(&mut |_, _| {})).unwrap();
        accuracy = block_on(t.evaluate()).unwrap().accuracy();
    }
    (accuracy, block_on(t.checkpoint()).unwrap(), data)
}

#[test]
fn standardised_iris_and_wine_train_well_above_90_percent() {
    // scikit-learn's MLPClassifier (32 hidden, adam) on the same 80/20 splits reaches
    // 93-100% (README, "Any labelled data").
    for (name, bytes) in [("iris.csv", IRIS), ("wine.csv", WINE)] {
        let (accuracy, ckpt, data) = train_table(name, bytes, 60);
        assert!(accuracy >= 0.9, "{name}: test accuracy {accuracy}");
        // The checkpoint keeps the ends, the names and the standardisation, and reads back.
        let back = Checkpoint::from_bytes(name, &ckpt.to_bytes().unwrap()).unwrap();
        assert_eq!(back.data, data.spec);
        assert_eq!(back.architecture.sizes[0], data.spec.features);
        assert!(back.data.standardization.is_some());
    }
}

#[test]
fn a_checkpoint_from_before_general_data_reads_as_mnist() {
    let data = common::small_sample(200, 50);
    let config = TrainConfig {
        hidden: vec![16],
        epochs: 1,
        ..TrainConfig::default()
    };
    let arch = config.architecture(&data.spec).unwrap();
    let mut t = Trainer::new(config, Box::new(CpuBackend::new(&arch)), &data).unwrap();
    block_on(t.train_epoch(&mut |_, _| {})).unwrap();
    let bytes = block_on(t.checkpoint()).unwrap().to_bytes().unwrap();
    // Take the `data` key out of the metadata, as gpumlp wrote it before.
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta: serde_json::Value =
        serde_json::from_str(&header.metadata().as_ref().unwrap()["gpumlp"]).unwrap();
    assert_eq!(meta["data"]["features"], 784);
    meta.as_object_mut().unwrap().remove("data");
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<(String, safetensors::tensor::TensorView)> =
        st.tensors().into_iter().collect();
    let info = std::collections::HashMap::from([("gpumlp".to_string(), meta.to_string())]);
    let old = safetensors::serialize(tensors, Some(info)).unwrap();
    let ckpt = Checkpoint::from_bytes("old", &old).unwrap();
    assert_eq!(ckpt.data, DataSpec::mnist());
    assert!(Trainer::resume(&ckpt, 2, Box::new(CpuBackend::new(&arch)), &data).is_ok());
}

/// Every file of the NumPy and CSV fuzz targets' seeds, the inputs fuzzing found among them
/// (`regression-*`), through what the targets run: no panic, and each in well under a second.
#[test]
fn the_fuzz_seeds_and_what_fuzzing_found_parse_or_fail_quickly() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let mut regressions = 0;
    for target in ["numpy", "csv"] {
        for entry in std::fs::read_dir(root.join(target)).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            regressions += path.to_string_lossy().contains("regression-") as usize;
            let start = std::time::Instant::now();
            if let Ok(a) = numpy::read_npy("f", "x", &bytes) {
                let _ = numpy::features("f", a.clone());
                let _ = numpy::labels("f", a);
            }
            if let Ok(arrays) = numpy::read_npz("f", &bytes) {
                let _ = numpy::splits("f", arrays, 0.2);
            }
            let _ = csv_table::read("f", &bytes, None, None);
            let _ = csv_table::read_features("f", &bytes, 3, None);
            let took = start.elapsed();
            assert!(took.as_secs_f64() < 1.0, "{path:?} took {took:?}");
        }
    }
    assert!(regressions >= 1, "the regression inputs are missing");
}
