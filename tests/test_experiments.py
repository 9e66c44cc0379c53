import pathlib

import pytest

from tsasr import config as config_lib
from tsasr import pipeline
from tsasr import recipe as recipe_lib

from conftest import ASR

EXPERIMENTS = sorted((pathlib.Path(__file__).resolve().parents[1] / "experiments").glob("*.py"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_files_load_locked_and_document_themselves(path):
    config = config_lib.experiment_config(path)
    assert config.name == path.stem
    with pytest.raises(AttributeError):
        config.not_a_field = 1
    doc = config_lib.load_experiment(path).__doc__
    assert f"python -m tsasr.run experiments/{path.name}" in doc and "Runtime:" in doc
    recipe = recipe_lib.load(config.recipe)
    assert config.get("until", "") in ("",) + tuple(s.name for s in recipe.stages(config))


def test_variants_change_only_what_they_name():
    base = config_lib.experiment_config(EXPERIMENTS[0].parent / "top20_T2.py").to_dict()
    hard = config_lib.experiment_config(EXPERIMENTS[0].parent / "hard_labels_k1.py").to_dict()
    changed = {k for k in base.keys() | hard.keys() if base.get(k) != hard.get(k)}
    assert changed == {"name", "student", "paper"}  # top20_T2 declares the paper's numbers it reproduces
    # top20_T2 also trains Table 2's second student (the sequence-trained teacher's labels)
    assert {k for k in base["student"] if base["student"][k] != hard["student"][k]} == {
        "top_k",
        "temperature",
        "second_teacher",
    }
    top20 = config_lib.experiment_config(EXPERIMENTS[0].parent / "top20_T2.py")
    hard_k1 = config_lib.experiment_config(EXPERIMENTS[0].parent / "hard_labels_k1.py")
    keys = pipeline.stage_keys(top20, ASR.stages(top20))
    hard_keys = pipeline.stage_keys(hard_k1, ASR.stages(hard_k1))
    # a k/T variant shares every upstream stage, labels included, and redoes only the students
    assert {s for s in keys if s in hard_keys and keys[s] != hard_keys[s]} == {
        "student_ce",
        "decode_student_ce",
        "student_seq",
        "decode_student_seq",
    }
