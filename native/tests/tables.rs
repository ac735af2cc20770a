//! The program on data other than 28x28 digits: CSV tables (the real Iris and Wine tables the
//! repository ships) and NumPy arrays, through train, eval, resume and predict, and every kind of
//! bad file of the new formats refused with one line, exit 2 and nothing written.

mod common;

use common::*;
use gpumlp::numpy::{encode_npy, encode_npz, Values};
use std::path::{Path, PathBuf};

fn table(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data/tables")
        .join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_csv_with_named_classes_trains_evaluates_resumes_and_predicts_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("iris.st");
    let iris = table("iris.csv");
    let train = |epochs: &str, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--epochs",
            epochs,
            "--batch",
            "16",
            "--hidden",
            "32",
            "--save",
            s(&model),
            "--json",
        ];
        args.extend_from_slice(extra);
        let o = gpumlp(&args, tmp.path());
        assert_ok(&o);
        json(&o)
    };
    let first = train("20", &["--data", s(&iris), "--standardize", "--lr", "0.01"]);
    let data = &first["data"];
    assert_eq!(
        (data["features"].as_u64(), data["classes"].as_u64()),
        (Some(4), Some(3))
    );
    assert_eq!(
        data["names"],
        serde_json::json!(["setosa", "versicolor", "virginica"])
    );
    assert_eq!(
        (data["train"].as_u64(), data["test"].as_u64()),
        (Some(120), Some(30))
    );
    assert_eq!(
        (
            data["test_fraction"].as_f64(),
            data["standardized"].as_bool()
        ),
        (Some(0.2), Some(true))
    );
    // Resumed without --data: the model knows its file, its split and its standardisation.
    let resumed = train("60", &["--resume", s(&model)]);
    let accuracy = resumed["test_accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.9, "iris test accuracy {accuracy}");
    let e = gpumlp(&["eval", "--model", s(&model), "--json"], tmp.path());
    assert_ok(&e);
    assert_eq!(json(&e)["test_accuracy"].as_f64(), Some(accuracy));
    // Predict prints names, on rows with the label column or without it.
    let rows = tmp.path().join("rows.csv");
    std::fs::write(&rows, "5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n").unwrap();
    let p = gpumlp(
        &[
            "predict",
            "--model",
            s(&model),
            "--json",
            s(&iris),
            s(&rows),
        ],
        tmp.path(),
    );
    assert_ok(&p);
    let out = stdout(&p);
    assert!(out.contains("iris.csv row 1: 0 (setosa)"), "{out}");
    let results = json(&p);
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 152);
    let names: Vec<&str> = results[150..]
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["setosa", "virginica"]);
    let correct = results[..150]
        .iter()
        .zip(std::fs::read_to_string(&iris).unwrap().lines().skip(1))
        .filter(|(r, line)| line.ends_with(r["name"].as_str().unwrap()))
        .count();
    assert!(correct >= 135, "{correct} of 150 rows named right");
    // A picture means nothing to a table's model.
    let o = gpumlp(&["predict", "--model", s(&model), s(&model)], tmp.path());
    assert_refused(&o, &["not pictures"]);
}

#[test]
fn a_label_column_by_name_and_npy_arrays_in_a_folder_train() {
    let tmp = tempfile::tempdir().unwrap();
    let o = gpumlp(
        &[
            "train",
            "--data",
            s(&table("wine.csv")),
            "--label",
            "class",
            "--standardize",
            "--test-fraction",
            "0.25",
            "--epochs",
            "40",
            "--batch",
            "16",
            "--hidden",
            "32",
            "--json",
        ],
        tmp.path(),
    );
    assert_ok(&o);
    let j = json(&o);
    assert_eq!(
        (j["data"]["features"].as_u64(), j["data"]["test"].as_u64()),
        (Some(13), Some(45))
    );
    assert!(j["test_accuracy"].as_f64().unwrap() >= 0.9, "{j}");
    // Float arrays [n, 3, 2] in x_train.npy / y_train.npy, and a model that predicts on .npy.
    let dir = tmp.path().join("arrays");
    std::fs::create_dir(&dir).unwrap();
    let n = 400;
    let x: Vec<f32> = (0..n * 6)
        .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
        .collect();
    // The class is which of the first two features is larger: learnable.
    let y: Vec<i64> = (0..n).map(|i| (x[6 * i] > x[6 * i + 1]) as i64).collect();
    std::fs::write(
        dir.join("x_train.npy"),
        encode_npy(&[n, 3, 2], &Values::Floats(x.clone())),
    )
    .unwrap();
    std::fs::write(dir.join("y_train.npy"), encode_npy(&[n], &Values::Ints(y))).unwrap();
    let model = tmp.path().join("arrays.st");
    let o = gpumlp(
        &[
            "train",
            "--data",
            s(&dir),
            "--epochs",
            "30",
            "--hidden",
            "16",
            "--batch",
            "32",
            "--save",
            s(&model),
            "--json",
        ],
        tmp.path(),
    );
    assert_ok(&o);
    let j = json(&o);
    assert_eq!(
        (j["data"]["features"].as_u64(), j["data"]["input"].as_str()),
        (Some(6), Some("floats"))
    );
    assert!(j["test_accuracy"].as_f64().unwrap() >= 0.9, "{j}");
    let samples = tmp.path().join("few.npy");
    std::fs::write(
        &samples,
        encode_npy(
            &[2, 6],
            &Values::Floats(vec![1., -1., 0., 0., 0., 0., -1., 1., 0., 0., 0., 0.]),
        ),
    )
    .unwrap();
    let p = gpumlp(
        &["predict", "--model", s(&model), "--json", s(&samples)],
        tmp.path(),
    );
    assert_ok(&p);
    let classes: Vec<u64> = json(&p)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["class"].as_u64().unwrap())
        .collect();
    assert_eq!(classes, [1, 0]);
}

#[test]
fn bad_tables_and_arrays_are_refused_in_one_line_with_nothing_written() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let write = |name: &str, bytes: &[u8]| {
        let p = root.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let good_x = encode_npy(&[3, 2], &Values::Floats(vec![1., 2., 3., 4., 5., 6.]));
    let good_y = encode_npy(&[3], &Values::Ints(vec![0, 1, 0]));
    let npz = encode_npz(&[("x", good_x.clone()), ("y", good_y)], true);
    let cases: Vec<(PathBuf, Vec<&str>, Vec<&str>)> = vec![
        (
            write("ragged.csv", b"a,b,y\n1,2,0\n3,0\n"),
            vec![],
            vec!["ragged.csv", "line 3: 2 columns"],
        ),
        (
            write("nan.csv", b"a,b,y\n1,nan,0\n"),
            vec![],
            vec!["nan.csv", "line 2, column b", "not a finite number"],
        ),
        (
            write("cut.npz", &npz[..npz.len() - 30]),
            vec![],
            vec!["cut.npz", "not a NumPy .npz archive"],
        ),
        (
            write("nolabels.npz", &encode_npz(&[("x", good_x.clone())], false)),
            vec![],
            vec!["nolabels.npz", "no arrays named x_train"],
        ),
        (
            write("alone.npy", &good_x),
            vec![],
            vec!["alone.npy", "holds no labels"],
        ),
        (
            write("data.txt", b"1,2,3\n"),
            vec![],
            vec!["data.txt", "not a data file gpumlp reads"],
        ),
        (
            table("iris.csv"),
            vec!["--label", "kind"],
            vec!["iris.csv", "no column named kind"],
        ),
        (
            table("iris.csv"),
            vec!["--test-fraction", "1.5"],
            vec!["--test-fraction", "'1.5' is not a fraction"],
        ),
        (
            PathBuf::from("mnist-sample"),
            vec!["--label", "y"],
            vec!["--label", "not a CSV file"],
        ),
        (
            PathBuf::from("mnist-sample"),
            vec!["--test-fraction", "0.1"],
            vec!["--test-fraction", "its own test split"],
        ),
    ];
    for (data, extra, needles) in cases {
        let out = root.join("out");
        std::fs::create_dir_all(&out).unwrap();
        let (save, metrics) = (out.join("m.st"), out.join("m.jsonl"));
        let mut args = vec![
            "train",
            "--data",
            s(&data),
            "--epochs",
            "1",
            "--save",
            s(&save),
            "--metrics",
            s(&metrics),
        ];
        args.extend_from_slice(&extra);
        let o = gpumlp(&args, root);
        assert_refused(&o, &needles);
        assert!(listing(&out).is_empty(), "{data:?}: files were written");
    }
}

#[test]
fn a_model_of_colour_images_of_another_size_predicts_on_scaled_pictures() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("colour");
    std::fs::create_dir(&dir).unwrap();
    // 6x5 RGB images: class 1 is red, class 0 blue; IDX of four dimensions.
    let images = |n: usize| -> (Vec<u8>, Vec<u8>) {
        let labels: Vec<u8> = (0..n).map(|i| (i % 2) as u8).collect();
        let pixels = labels
            .iter()
            .enumerate()
            .flat_map(|(i, &l)| {
                (0..30).flat_map(move |p| {
                    let noise = ((i * 31 + p * 7) % 40) as u8;
                    if l == 1 {
                        [200 + noise / 2, noise, noise]
                    } else {
                        [noise, noise, 200 + noise / 2]
                    }
                })
            })
            .collect();
        (pixels, labels)
    };
    for (prefix, n) in [("train", 200), ("t10k", 50)] {
        let (pixels, labels) = images(n);
        let bytes = gpumlp::idx::encode_images_of([6, 5, 3], &pixels);
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), bytes).unwrap();
        std::fs::write(
            dir.join(format!("{prefix}-labels-idx1-ubyte")),
            gpumlp::idx::encode_labels(&labels),
        )
        .unwrap();
    }
    let model = tmp.path().join("colour.st");
    let o = gpumlp(
        &[
            "train",
            "--data",
            s(&dir),
            "--epochs",
            "10",
            "--batch",
            "16",
            "--hidden",
            "8",
            "--save",
            s(&model),
            "--json",
        ],
        tmp.path(),
    );
    assert_ok(&o);
    let j = json(&o);
    assert_eq!(j["data"]["image"], serde_json::json!([6, 5, 3]));
    assert_eq!(j["data"]["features"].as_u64(), Some(90));
    assert_eq!(j["test_accuracy"].as_f64(), Some(1.0), "{j}");
    // A big red picture and a big blue one, scaled down to 6x5.
    let picture = |name: &str, rgb: [u8; 3]| {
        let path = tmp.path().join(name);
        image::RgbImage::from_pixel(60, 50, image::Rgb(rgb))
            .save(&path)
            .unwrap();
        path
    };
    let (red, blue) = (
        picture("red.png", [220, 10, 10]),
        picture("blue.png", [10, 10, 220]),
    );
    let p = gpumlp(
        &["predict", "--model", s(&model), "--json", s(&red), s(&blue)],
        tmp.path(),
    );
    assert_ok(&p);
    let classes: Vec<u64> = json(&p)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["class"].as_u64().unwrap())
        .collect();
    assert_eq!(classes, [1, 0]);
}
