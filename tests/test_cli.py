import headwise
from headwise.cli import main
from lofit import LofitConfig
from tiny_models import tiny_model


def test_inspect_a_saved_model_and_an_adapter(tmp_path, capsys):
    model = tiny_model("qwen3")
    model.save_pretrained(tmp_path / "base")
    main(["inspect", str(tmp_path / "base")])
    assert "qwen3: 3 layers x 4 query heads (2 key/value heads), head_dim 12" in capsys.readouterr().out
    headwise.wrap(model, LofitConfig(heads=[(0, 1)])).save_pretrained(tmp_path / "adapter")
    main(["adapter", str(tmp_path / "adapter")])
    assert "LOFIT adapter" in capsys.readouterr().out
