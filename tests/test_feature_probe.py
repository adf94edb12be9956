"""`probe_feature_file`: any label on a feature file finds planted signal, sits at chance on noise, and refuses
what it cannot join, with one line."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anatcl_core.feature_files import read_features, write_features
from anatcl_core.feature_probe import guess_kind, probe_feature_file


def planted(tmp_path, n=120, d=16, seed=0):
    """Features whose first column carries `score` and `group`; the rest is noise. Files are shuffled apart."""
    rng = np.random.default_rng(seed)
    tmp_path.mkdir(exist_ok=True)
    ids = [f"sub-{i:03d}" for i in range(n)]
    group = rng.integers(0, 2, n)
    score = rng.normal(50, 10, n)
    X = rng.normal(size=(n, d)).astype(np.float32)
    X[:, 0] += 3.0 * (group - 0.5)
    X[:, 1] += (score - 50) / 5
    write_features(tmp_path / "features.tsv", ids, X)
    labels = pd.DataFrame({"participant_id": ids, "group": np.where(group, "patient", "control"), "score": score,
                           "noise": rng.integers(0, 2, n), "site": rng.integers(0, 4, n)}).sample(frac=1, random_state=1)
    labels.to_csv(tmp_path / "participants.tsv", sep="\t", index=False)
    return tmp_path / "features.tsv", tmp_path / "participants.tsv"


def test_planted_signal_is_found_and_noise_sits_at_chance(tmp_path):
    features, labels = planted(tmp_path)
    group, folds = probe_feature_file(features, labels, "group")
    assert group.metric == "balanced_accuracy" and group.mean > 70 and len(folds) == 5
    # chance: over seeds the mean sits at 50 with an SD of ~7 points at 120 subjects; 400 make it ~3
    features, labels = planted(tmp_path / "large", n=400)
    noise, _ = probe_feature_file(features, labels, "noise", kind="classification")
    assert abs(noise.mean - 50) < 8
    features, labels = planted(tmp_path / "small")
    score, _ = probe_feature_file(features, labels, "score", groups="site")
    assert score.metric == "mae" and score.mean < 0.6 * 10         # well under the SD of the score
    assert set(folds.columns) == {"fold", "metric", "score", "penalty"}


def test_the_kind_is_guessed_from_the_values():
    assert guess_kind(pd.Series(["a", "b"])) == "classification"
    assert guess_kind(pd.Series([0, 1, 1, 0])) == "classification"
    assert guess_kind(pd.Series(np.linspace(0, 1, 50))) == "regression"


def test_rows_without_a_label_are_left_out_and_said(tmp_path):
    features, labels = planted(tmp_path)
    table = pd.read_csv(labels, sep="\t")
    table.loc[table.index[:10], "score"] = np.nan
    table.iloc[5:].to_csv(labels, sep="\t", index=False)
    result, _ = probe_feature_file(features, labels, "score")
    assert result.n_samples == 120 - 5 - 5 and "5 feature row(s) have no row in the labels" in result.note
    assert "subject(s) without a value of 'score' left out" in result.note


def test_a_class_too_small_is_not_evaluable_and_says_why(tmp_path):
    features, labels = planted(tmp_path)
    table = pd.read_csv(labels, sep="\t")
    table["rare"] = "common"
    table.loc[table.index[0], "rare"] = "rare"
    table.to_csv(labels, sep="\t", index=False)
    result, folds = probe_feature_file(features, labels, "rare")
    assert not result.evaluable and "has 1 subject" in result.note and folds.empty


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: t.drop(columns="participant_id"), "no 'participant_id' column"),
    (lambda t: t.assign(participant_id="x" + t["participant_id"]), "none of the 120 feature rows' ids"),
    (lambda t: pd.concat([t, t.iloc[:1]]), "field 'participant_id' repeats"),
    (lambda t: t.assign(score="high"), "holds non-numbers"),
])
def test_what_cannot_be_joined_is_refused_in_one_line(tmp_path, edit, message):
    features, labels = planted(tmp_path)
    edit(pd.read_csv(labels, sep="\t")).to_csv(labels, sep="\t", index=False)
    with pytest.raises(ValueError, match=message) as err:
        probe_feature_file(features, labels, "score", kind="regression")
    assert len(str(err.value).splitlines()) == 1


def test_an_unknown_target_names_the_columns(tmp_path):
    features, labels = planted(tmp_path)
    with pytest.raises(ValueError, match=r"no column 'diagnosis'; the columns are \['participant_id', 'group'"):
        probe_feature_file(features, labels, "diagnosis")


def test_the_command_line_probes_a_feature_file_and_writes_the_folds(tmp_path, capsys):
    from anatcl_core.cli import main
    features, labels = planted(tmp_path)
    out = tmp_path / "folds.csv"
    assert main(["probe", "--features", str(features), "--labels", str(labels), "--target", "group",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("group: balanced_accuracy ") and "SD over 5 test folds" in printed
    folds = pd.read_csv(out)
    direct, _ = probe_feature_file(features, labels, "group")
    np.testing.assert_allclose(folds["score"], direct.scores)


@pytest.mark.parametrize("argv, message", [
    (["--features", "F", "--target", "group"], "--features needs --labels"),
    (["--features", "F", "--labels", "L", "--target", "group", "--data", "d"], "give one or the other"),
    (["--data", "d", "--out", "o.csv", "--target", "group"], "--target only goes with --features"),
    (["--data", "d"], "expected --checkpoint, --out"),
    (["--features", "F", "--labels", "L", "--target", "group", "--workers", "2", "--tasks", "adni/ad-vs-hc"],
     "--tasks, --workers only go with --checkpoint"),
])
def test_mixed_or_missing_probe_flags_are_one_line(argv, message, capsys):
    from anatcl_core.cli import main
    assert main(["probe", *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_a_file_that_is_not_a_feature_file_is_named_in_one_line(tmp_path, capsys):
    from anatcl_core.cli import main
    features, labels = planted(tmp_path)
    np.save(tmp_path / "short.npy", np.zeros((3, 4), dtype=np.float32))
    pd.DataFrame({"participant_id": ["a", "b"]}).to_csv(tmp_path / "short.ids.tsv", sep="\t", index=False)
    (tmp_path / "fake.npy").write_text("not an array")
    pd.DataFrame({"participant_id": ["a"]}).to_csv(tmp_path / "fake.ids.tsv", sep="\t", index=False)
    for given, message in ((labels, "hold text; expected participant_id then one numeric column"),
                           (tmp_path / "short.npy", "array of shape [3, 4] for 2 ids"),
                           (tmp_path / "fake.npy", "not a NumPy array file")):
        assert main(["probe", "--features", str(given), "--labels", str(labels), "--target", "group"]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and str(given) in err, err


def test_empty_missing_or_misplaced_files_are_named_in_one_line(tmp_path, capsys):
    from anatcl_core.cli import main
    features, labels = planted(tmp_path)
    (tmp_path / "empty.tsv").write_text("")
    (tmp_path / "header.tsv").write_text("participant_id\tfeature_000\n")
    (tmp_path / "binary.tsv").write_bytes(b"\x80\x81\xfe\x00\x01")
    rows = "".join(f"sub-{i}\tx\n" for i in range(3000))    # past pandas' first chunk; then a Latin-1 name
    (tmp_path / "latin1.tsv").write_bytes(f"participant_id\tgroup\n{rows}".encode() + "sub-é\tx\n".encode("latin-1"))
    (tmp_path / "quoted.csv").write_text('participant_id,feature_000\n"a,1\n')
    np.save(tmp_path / "alone.npy", np.zeros((2, 3), dtype=np.float32))
    (tmp_path / "folder.npy").mkdir()
    cases = [(tmp_path / "empty.tsv", labels, "empty.tsv: empty file"),
             (tmp_path / "header.tsv", labels, "header.tsv: a header line and no rows"),
             (tmp_path / "binary.tsv", labels, "binary.tsv: line 1 is not UTF-8 text (byte 0x80); "
                                               "expected the features file saved as UTF-8"),
             (features, tmp_path / "latin1.tsv", "latin1.tsv: line 3002 is not UTF-8 text (byte 0xe9); "
                                                 "expected the labels file saved as UTF-8"),
             (tmp_path / "quoted.csv", labels, "quoted.csv: not a readable features file"),
             (tmp_path / "gone.npy", labels, "gone.npy: no such features file"),
             (tmp_path / "folder.npy", labels, "folder.npy: is a folder; expected the features file"),
             (tmp_path / "alone.npy", labels, "alone.npy: its ids file alone.ids.tsv is missing"),
             (features, tmp_path, f"{tmp_path}: is a folder; expected the labels file"),
             (features, tmp_path / "empty.tsv", "empty.tsv: empty file; expected the labels file"),
             (features, tmp_path / "gone.tsv", "gone.tsv: no such labels file")]
    if Path("/dev/null").exists():                              # a device: there, but not a file
        cases.append((features, Path("/dev/null"), "/dev/null: not a regular file; expected the labels file"))
    (tmp_path / "dangling.tsv").symlink_to(tmp_path / "moved-away.tsv")
    cases.append((features, tmp_path / "dangling.tsv", "dangling.tsv: a link to"))
    cases.append((tmp_path, labels, f"{tmp_path}: is a folder; expected the features file"))
    np.save(tmp_path / "piped.npy", np.zeros((2, 3), dtype=np.float32))
    os.mkfifo(tmp_path / "piped.ids.tsv")                       # read, it would hang: refused instead
    cases.append((tmp_path / "piped.npy", labels, "piped.ids.tsv: not a regular file; expected the ids file"))
    (tmp_path / "nobom.tsv").write_bytes(labels.read_text().encode("utf-16-le"))
    cases.append((features, tmp_path / "nobom.tsv", "nobom.tsv: NUL characters in the header (UTF-16 or UTF-32"))
    asian = "participant_id\tgroup\n" + "".join(f"上海-{i}\tx\n" for i in range(3))   # U+4E0A holds a 0x0A byte
    (tmp_path / "utf16.tsv").write_bytes(asian.encode("utf-16") + b"\x00\xd8" + "\tx\n".encode("utf-16-le"))
    cases.append((features, tmp_path / "utf16.tsv", "utf16.tsv: line 5 is not UTF-16 text"))
    for plain in (labels, features):                            # every row ends in a tab, as some exports do
        header, *rows = plain.read_text().splitlines()
        (tmp_path / f"trailing-{plain.name}").write_text("\n".join([header, *(r + "\t" for r in rows)]) + "\n")
    cases.append((tmp_path / f"trailing-{features.name}", tmp_path / f"trailing-{labels.name}", None))
    for given, given_labels, message in cases:
        if message is None:                                     # read as the plain file: the probe runs
            assert main(["probe", "--features", str(given), "--labels", str(given_labels), "--target", "group"]) == 0
            capsys.readouterr()
            continue
        assert main(["probe", "--features", str(given), "--labels", str(given_labels), "--target", "group"]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err


def test_upper_case_suffixes_name_the_same_formats(tmp_path):
    features, labels = planted(tmp_path)
    ids, X = read_features(features)
    for name in ("FEATURES.CSV", "features.Tsv", "features.NPY"):
        write_features(tmp_path / name, ids, X)
        got_ids, got = read_features(tmp_path / name)
        assert got_ids == ids and np.array_equal(got, X)
    assert (tmp_path / "features.ids.tsv").exists()               # the .NPY's ids, beside it
    shouted = tmp_path / "PARTICIPANTS.CSV"
    pd.read_csv(labels, sep="\t").to_csv(shouted, index=False)
    assert probe_feature_file(tmp_path / "FEATURES.CSV", shouted, "group")[0] == probe_feature_file(features, labels,
                                                                                                  "group")[0]


def test_out_is_never_an_input_nor_a_device_or_pipe(tmp_path, capsys):
    from anatcl_core.cli import main
    features, labels = planted(tmp_path)
    before = {path: path.read_bytes() for path in (features, labels)}
    os.mkfifo(tmp_path / "pipe.csv")
    for out, message in ((labels, "is one of the input files"), (tmp_path / "." / features.name, "is one of the input"),
                         (tmp_path / "pipe.csv", "not a regular file (a device or pipe)")):
        assert main(["probe", "--features", str(features), "--labels", str(labels), "--target", "group",
                     "--out", str(out)]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    assert {path: path.read_bytes() for path in (features, labels)} == before
    npy, ids_file = write_features(tmp_path / "f.npy", *read_features(features))      # its ids file is an input too
    assert main(["probe", "--features", str(npy), "--labels", str(labels), "--target", "group",
                 "--out", str(ids_file)]) == 1
    assert "is one of the input files" in capsys.readouterr().err and read_features(npy)[0] == read_features(features)[0]


def test_a_table_saved_as_utf16_reads_as_its_utf8_copy(tmp_path):
    # spreadsheets save "Unicode text" as UTF-16 with a byte-order mark; the probe reads what it says
    features, labels = planted(tmp_path)
    wide = tmp_path / "participants-utf16.tsv"
    wide.write_bytes(labels.read_text(encoding="utf-8").encode("utf-16"))      # BOM + UTF-16 (little-endian)
    assert wide.read_bytes()[:2] in (b"\xff\xfe", b"\xfe\xff")
    plain, plain_folds = probe_feature_file(features, labels, "group")
    utf16, utf16_folds = probe_feature_file(features, wide, "group")
    assert utf16 == plain
    pd.testing.assert_frame_equal(utf16_folds, plain_folds)


@pytest.mark.parametrize("suffix", [".tsv", ".npy"])
def test_features_with_nan_or_inf_are_refused_naming_the_subjects(tmp_path, capsys, suffix):
    from anatcl_core.cli import main
    features, labels = planted(tmp_path)
    ids, X = read_features(features)
    X[[4, 9]] = np.nan
    X[11, 0] = np.inf
    bad = write_features(tmp_path / f"bad{suffix}", ids, X)[0]
    assert main(["probe", "--features", str(bad), "--labels", str(labels), "--target", "group"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"features: 3 labelled subject(s) have NaN or inf features ({ids[4]}, {ids[9]}, {ids[11]};" in err
    table = pd.read_csv(labels, sep="\t")                       # unlabelled subjects' features are not read
    table[~table["participant_id"].isin([ids[4], ids[9], ids[11]])].to_csv(labels, sep="\t", index=False)
    result, _ = probe_feature_file(bad, labels, "group")
    assert result.evaluable and "3 feature row(s) have no row in the labels" in result.note


def test_an_out_that_is_a_folder_is_refused_before_the_probe(tmp_path, capsys):
    from anatcl_core.cli import main
    features, labels = planted(tmp_path)
    assert main(["probe", "--features", str(features), "--labels", str(labels), "--target", "group",
                 "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a folder; expected a CSV file path" in err, err


def test_a_reader_that_quits_early_gets_no_traceback_and_the_out_file_is_written(tmp_path):
    import subprocess
    import sys
    features, labels = planted(tmp_path)
    out = tmp_path / "folds.csv"
    run = subprocess.Popen([sys.executable, "-m", "anatcl_core.cli", "probe", "--features", str(features), "--labels",
                            str(labels), "--target", "group", "--out", str(out)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    run.stdout.close()                                          # as `| head -0` would: nobody reads the results
    err = run.stderr.read().decode()
    assert run.wait() == 1 and err == "", err
    assert len(pd.read_csv(out)) == 5                             # the file is there, whole
    out.unlink()
    closed = subprocess.run([sys.executable, "-m", "anatcl_core.cli", "probe", "--features", str(features),
                             "--labels", str(labels), "--target", "group", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: os.close(1))     # started with no stdout at all (>&-)
    assert closed.returncode == 0 and closed.stderr == "", closed.stderr
    assert len(pd.read_csv(out)) == 5
