"""The key comments of the YAML configs in config/ are the schemas' help texts (modules/config/comments.py
states the rule): every config agrees, and the generator that writes them changes comments only."""

import re

import pytest
import yaml

from modules.config import CONFIG_DIR, MOTION_MODELS, find_config_files, iter_schema, load_config
from modules.config.comments import NOTE, comment_problems, help_comments, main, rewrite, schema_help, split_note

CONFIGS = find_config_files()
HEADER = "# a header\n# of two lines\n\n"


def helps(family="fomm"):
    return {dotted: key.doc for dotted, key in iter_schema(family)}


def data_lines(text):
    """The lines of a YAML text without their comments: what the generator must leave alone."""
    return [re.sub(r"\s+#.*$", "", line) for line in text.splitlines() if not line.lstrip().startswith("#")]


def test_there_are_19_official_configs():
    assert len(CONFIGS) == 19 and all(path.parent == CONFIG_DIR for path in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.stem)
def test_every_key_comment_is_the_schema_help(path):
    assert comment_problems(path) == []


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.stem)
def test_the_generator_leaves_the_official_configs_as_they_are(path):
    text = path.read_text()
    assert rewrite(text) == text
    # every key has its comment: a trailing one, or a heading for a section
    comments = help_comments(text)
    assert comments and all(comment.text for comment in comments)
    assert {c.dotted for c in comments} <= set(schema_help(text))


@pytest.mark.parametrize("family", MOTION_MODELS)
def test_help_texts_can_be_comments(family):
    for dotted, key in iter_schema(family):
        assert NOTE not in key.doc, dotted  # a comment splits into help and note in one way only
        assert key.doc == key.doc.strip() and "#" not in key.doc and "\n" not in key.doc, dotted


def test_split_note():
    assert split_note("number of keypoints K") == ("number of keypoints K", None)
    assert split_note("channel cap -- vox: 1024 -- really") == ("channel cap", "vox: 1024 -- really")


def test_the_rule(tmp_path):
    docs = helps()
    text = (CONFIG_DIR / "vox-256.yaml").read_text()
    kp = docs["model_params.common_params.num_kp"]
    temperature = docs["model_params.kp_detector_params.temperature"]
    edited = (text.replace(f"# {kp}", f"# {kp}{NOTE}ten of them")        # a note: agrees
                  .replace(f"# {temperature}", f"# {temperature}{NOTE}")  # an empty note: disagrees
                  .replace("# videos to train and test on\n", "")         # a section without its heading
                  .replace(f"# {docs['train_params.batch_size']}", "# frames per step")  # drifted
                  .replace("  checkpoint_freq: 50", "  checkpoint_freq: 50  # " + docs["train_params.num_epochs"])
                  .replace("    num_blocks: 5                         # ", "    num_blocks: 5\n    nm_blocks: 5  # "))
    path = tmp_path / "my.yaml"
    path.write_text(edited)
    problems = comment_problems(path)
    lines = edited.splitlines()
    kp_detector = "model_params.kp_detector_params."
    expected = [("dataset_params:", "dataset_params"), ("    temperature:", kp_detector + "temperature"),
                ("    num_blocks:", kp_detector + "num_blocks"), ("    nm_blocks:", kp_detector + "nm_blocks"),
                ("  batch_size:", "train_params.batch_size"), ("  checkpoint_freq:", "train_params.checkpoint_freq")]
    where = [f"{path}:{next(i + 1 for i, text in enumerate(lines) if text.startswith(start))}: {dotted}"
             for start, dotted in expected]
    assert len(problems) == len(where), problems
    assert all(problem.startswith(w + ": ") for problem, w in zip(problems, where)), problems
    assert problems[0].endswith("no heading; its help is 'videos to train and test on'")
    assert problems[2].endswith(f"no comment; its help is {docs['model_params.kp_detector_params.num_blocks']!r}")
    assert problems[3].endswith("not a key of this config's schema")
    assert "the comment 'frames per step' is not the help" in problems[4]
    assert main(["--check", str(path)]) == 1


def test_the_generator_writes_comments_only(tmp_path):
    docs = helps()
    text = (CONFIG_DIR / "vox-256.yaml").read_text()
    kp = docs["model_params.common_params.num_kp"]
    edited = (text.replace(f"# {kp}", f"# an old help{NOTE}ten of them")
                  .replace("# videos to train and test on\n", "")
                  .replace("# training (run.py --mode train)", "# old heading -- my note\n# and more")
                  .replace(f"  # {docs['train_params.batch_size']}", "")       # comment dropped, spaces too
                  .replace(f"# {docs['visualizer_params.kp_size']}", "#radius"))
    path = tmp_path / "vox.yaml"
    path.write_text(edited)
    assert main(["--write", str(path)]) == 0
    written = path.read_text()
    assert comment_problems(path) == []
    assert yaml.safe_load(written) == yaml.safe_load(text)
    assert load_config(path) == load_config(CONFIG_DIR / "vox-256.yaml")
    assert data_lines(written) == data_lines(text)
    assert f"    num_kp: 10                            # {kp}{NOTE}ten of them\n" in written
    assert "\n\n# videos to train and test on\ndataset_params:\n" in written
    assert f"# {docs['train_params']}{NOTE}my note\n# and more\ntrain_params:\n" in written
    assert f"  batch_size: 40                          # {docs['train_params.batch_size']}\n" in written
    assert written.replace(f"{NOTE}ten of them", "").replace(f"{NOTE}my note\n# and more", "") == text
    assert rewrite(written) == written
    assert main(["--check", str(path)]) == 0


def test_a_comment_block_right_above_a_section_is_its_heading():
    docs = helps()
    text = "# header\n\nvisualizer_params:\n  kp_size: 3\n"
    written = rewrite(text)
    assert written == (f"# header\n\n# {docs['visualizer_params']}\nvisualizer_params:\n"
                       f"{'  kp_size: 3':<42}# {docs['visualizer_params.kp_size']}\n")
    assert rewrite(written) == written
    touching = "# my config -- for cats\n# more\nvisualizer_params:\n  kp_size: 3\n"
    assert rewrite(touching).startswith(f"# {docs['visualizer_params']} -- for cats\n# more\nvisualizer_params:\n")


def test_line_endings_and_the_comment_column_are_kept():
    text = "visualizer_params:  # x\r\n  kp_size: 3     # old\r\n  draw_border: true\r\n"
    written = rewrite(text)
    docs = helps()
    assert written == (f"# {docs['visualizer_params']}\r\nvisualizer_params:  # x\r\n"
                       f"  kp_size: 3     # {docs['visualizer_params.kp_size']}\r\n"
                       f"  draw_border: true  # {docs['visualizer_params.draw_border']}\r\n")


def test_each_family_gets_its_own_help(tmp_path):
    for name, family in (("tpsmm-vox-256", "tps"), ("cpabmm-vox-256", "cpab"), ("vox-256", "fomm")):
        text = (CONFIG_DIR / f"{name}.yaml").read_text()
        assert schema_help(text) == helps(family)
    text = (CONFIG_DIR / "tpsmm-vox-256.yaml").read_text()
    assert f"# {helps('tps')['model_params.common_params.num_tps']}" in text


def test_a_value_over_several_lines_has_no_place_for_a_comment(tmp_path, capsys):
    with pytest.raises(ValueError, match="spans several lines"):
        help_comments("train_params:\n  scales: [1,\n    0.5]\n")
    (tmp_path / "a.yaml").write_text("train_params:\n  scales: [1,\n    0.5]\n")
    (tmp_path / "b.yaml").write_text("train_params: [\n")
    assert main(["--write", str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml"), str(tmp_path / "c.yaml")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[0] for line in out] == [str(tmp_path / name) for name in ("a.yaml", "b.yaml", "c.yaml")]
    assert "train_params.scales spans several lines" in out[0] and "No such file" in out[2]


def test_anchors_and_aliases_keep_their_place():
    text = "visualizer_params: &v\n  kp_size: 3\nanimate_params:\n  num_pairs: &n 5\n  normalization_params: *v\n"
    written = rewrite(text)
    assert yaml.safe_load(written) == yaml.safe_load(text) and data_lines(written) == data_lines(text)
    assert f"{'  normalization_params: *v':<42}# {helps()['animate_params.normalization_params']}\n" in written
    assert rewrite(written) == written
