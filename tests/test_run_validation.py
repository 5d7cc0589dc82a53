"""A run directory is checked when it is loaded: config.json and calibration.json against their schema,
before the model is loaded, then the class names against the model's real output; one line each, naming
the file and the field. The same check serves `predict`, `serve`, `export` and `evaluate`."""

import json
import math
import shutil

import pytest
from typer.testing import CliRunner

from digitlab import runs
from digitlab.cli import app
from digitlab.errors import DigitlabError, RunError
from digitlab.predict import keras_runtime, load_predictor
from digitlab.serve import check_run


@pytest.fixture
def run(tmp_path, synthetic_mlp_run):
    return shutil.copytree(synthetic_mlp_run, tmp_path / "run")


def edit(path, change):
    """Rewrite a JSON file: `change(obj)` edits it in place or returns a replacement."""
    obj = json.loads(path.read_text())
    new = change(obj)
    path.write_text(json.dumps(obj if new is None else new))


def one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# (file, change, what the error says): every one is refused before the model is loaded.
SCHEMA = {
    "class names not a list": (runs.CONFIG, lambda c: c["data"].update(class_names=5), r"data\.class_names: .*got 5"),
    "config not an object": (runs.CONFIG, lambda c: [], r"expected a JSON object, got a list"),
    "model null": (runs.CONFIG, lambda c: c.update(model=None), r"model: expected an object .*got null"),
    "num_classes a string": (
        runs.CONFIG,
        lambda c: c["model"].update(num_classes="10"),
        r"model\.num_classes: expected an integer, got '10'",
    ),
    "num_classes 1e12": (
        runs.CONFIG,
        lambda c: c["model"].update(num_classes=1e12),
        r"model\.num_classes: expected an integer",
    ),
    "architecture not a string": (
        runs.CONFIG,
        lambda c: c["model"].update(architecture=["mlp"]),
        r"model\.architecture: expected a string, got \['mlp'\]",
    ),
    "units not a list": (runs.CONFIG, lambda c: c["model"].update(units=16), r"model\.units: expected a list"),
    "train epochs a string": (runs.CONFIG, lambda c: c["train"].update(epochs="2"), r"train\.epochs: expected"),
    "temperature a string": (
        runs.CALIBRATION,
        lambda c: c.update(temperature="abc"),
        r"temperature: expected a positive number, got 'abc'",
    ),
    "temperature 0": (runs.CALIBRATION, lambda c: c.update(temperature=0), r"temperature: expected a positive"),
    "temperature NaN": (runs.CALIBRATION, lambda c: c.update(temperature=math.nan), r"temperature: .*got nan"),
    "threshold above 1": (runs.CALIBRATION, lambda c: c.update(threshold=2), r"threshold: expected a number in"),
    "calibration empty": (runs.CALIBRATION, lambda c: {}, r"temperature: missing"),
}


@pytest.mark.parametrize("case", list(SCHEMA))
def test_a_malformed_run_is_one_error_naming_file_and_field_before_the_model_loads(run, monkeypatch, case):
    name, change, message = SCHEMA[case]
    edit(run / name, change)

    def no_model(run_dir):
        raise AssertionError("the model was loaded before the run's files were checked")

    monkeypatch.setattr(keras_runtime, "load", no_model)
    for check in (load_predictor, check_run):
        with pytest.raises(RunError, match=rf"^{run / name}: {message}") as caught:
            check(run)
        assert "\n" not in str(caught.value)


# Shape errors: the files are well formed but do not fit the model's output (10 classes).
@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["data"].update(class_names=list("01234")), r"data\.class_names holds 5 names; the model gives 10"),
        (lambda c: c["model"].update(num_classes=12), r"model\.num_classes is 12; the model gives 10"),
    ],
    ids=["fewer class names", "num_classes"],
)
def test_class_names_are_checked_against_the_models_output(run, change, message):
    edit(run / runs.CONFIG, change)
    with pytest.raises(RunError, match=rf"^{run / runs.CONFIG}: {message}"):
        load_predictor(run)


def test_a_line_runs_classes_are_its_output_less_the_blank(tmp_path, tiny_line_run):
    run = shutil.copytree(tiny_line_run, tmp_path / "line")
    assert load_predictor(run).class_names == tuple("0123456789")  # 11 outputs: ten digits and the blank
    edit(run / runs.CONFIG, lambda c: c["data"].update(class_names=list("0123456789x")))
    with pytest.raises(RunError, match=r"data\.class_names holds 11 names; the model gives 10"):
        load_predictor(run)


def test_the_server_does_not_start_on_a_run_that_would_fail_every_request(run):
    from digitlab.serve.service import Service

    edit(run / runs.CONFIG, lambda c: c["data"].update(class_names=list("01234")))
    with pytest.raises(RunError, match="data.class_names holds 5 names"):
        Service.load(run)


@pytest.mark.parametrize("command", ["predict", "read", "export", "evaluate"])
def test_every_command_that_loads_a_run_says_so_in_one_line(run, tmp_path, command):
    edit(run / runs.CONFIG, lambda c: c.update(model=None))
    args = {"predict": [tmp_path], "read": [tmp_path]}.get(command, [])
    result = CliRunner().invoke(app, [command, str(run), *map(str, args)])
    one_line_error(result, f"{run / runs.CONFIG}: model: expected an object")


def test_export_from_python_checks_the_run_first(run):
    from digitlab.export import export

    edit(run / runs.CONFIG, lambda c: c.update(train=[]))
    with pytest.raises(DigitlabError, match=rf"^{run / runs.CONFIG}: train: expected an object"):
        export(run, "onnx")
    assert not (run / runs.ONNX).exists()


def test_a_good_run_loads(run):
    predictor = load_predictor(run)
    assert predictor.class_names == tuple("0123456789") and predictor.temperature > 0


def test_every_config_field_has_a_json_check():
    import dataclasses

    from digitlab.config import JSON_TYPES, ModelConfig, TrainConfig

    for cls in (ModelConfig, TrainConfig):
        for field in dataclasses.fields(cls):
            assert all(t in JSON_TYPES for t in field.type.split(" | ")), (cls.__name__, field.name, field.type)


# A run that never finished: the same advice, naming the command that works, from every command.
def test_a_run_without_a_checkpoint_is_trained_again_with_overwrite(run):
    from digitlab.training import resume

    for name in (runs.CHECKPOINT, runs.STATE, runs.CALIBRATION):
        (run / name).unlink()
    advice = rf"never finished an epoch .*`digitlab train --out {run} --overwrite"
    with pytest.raises(RunError, match=advice) as predicting:
        load_predictor(run)
    with pytest.raises(RunError, match=advice) as resuming:
        resume(run)
    assert str(predicting.value) == str(resuming.value)
    assert "--resume" not in str(predicting.value).split(";")[1]


def test_a_run_killed_after_its_last_epoch_is_completed_by_resume(run):
    (run / runs.CALIBRATION).unlink()
    with pytest.raises(RunError, match=rf"`digitlab train --resume {run}` completes it"):
        load_predictor(run)


def test_a_digitlab_error_is_what_a_caller_catches(run):
    edit(run / runs.CONFIG, lambda c: [])
    with pytest.raises(DigitlabError):
        runs.read_run_config(run)
