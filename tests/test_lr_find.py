"""The learning-rate range test: what it returns and writes, and that it reports progress only by its callback."""

from digitlab.config import resolve_configs
from digitlab.lr_find import lr_find


def test_lr_find_reports_each_batch_and_prints_nothing(tmp_path, synthetic_dir, capsys):
    model_cfg, train_cfg = resolve_configs(
        "mlp", architecture="mlp", units=(16,), batch_size=16, dataset="synthetic", epochs=1
    )
    calls = []
    result = lr_find(
        model_cfg, train_cfg, tmp_path, steps=12, data_dir=synthetic_dir, progress=lambda *a: calls.append(a)
    )
    assert calls == [(step, 12) for step in range(1, len(result["lrs"]) + 1)]
    assert 2 <= len(result["lrs"]) <= 12 and len(result["losses"]) == len(result["smoothed"]) == len(result["lrs"])
    assert (tmp_path / "lr_find.png").is_file() and (tmp_path / "lr_find.csv").is_file()
    assert capsys.readouterr() == ("", "")
