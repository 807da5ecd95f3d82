"""Config files: the repo's own files load; typos are errors naming file, key and line."""

import pytest

from classifier.config import load_feeds, load_theses
from classifier.errors import ConfigError
from tests.conftest import ROOT


def test_repo_files_load():
    theses = load_theses(ROOT / "theses.toml")
    seed = theses.get("oss-parity")
    assert seed.probability == 0.75
    assert {t.id for t in seed.trigger} == {"above-85", "below-60"}
    assert len(theses.thesis) >= 3
    assert load_feeds(ROOT / "feeds.toml").feed


def test_unknown_key_names_file_key_and_line(tmp_path):
    p = tmp_path / "feeds.toml"
    p.write_text('[[feed]]\nname = "a"\nurl = "https://a.example/rss"\n\n'
                 '[[feed]]\nname = "b"\nurl = "https://b.example/rss"\npoll_minuts = 5\n')
    with pytest.raises(ConfigError) as e:
        load_feeds(p)
    assert e.value.line == 8 and e.value.key == "feed.1.poll_minuts"
    assert str(p) in str(e.value) and "unknown key" in str(e.value)


def test_bad_value_in_nested_trigger(tmp_path):
    p = tmp_path / "theses.toml"
    p.write_text('[[thesis]]\nid = "t"\ntitle = "T"\nstatement = "S"\nprobability = 0.5\n\n'
                 '[[thesis.trigger]]\nid = "x"\ndirection = "sideways"\nto = 0.9\ncondition = "c"\n')
    with pytest.raises(ConfigError) as e:
        load_theses(p)
    assert e.value.key == "thesis.0.trigger.0.direction" and e.value.line == 9


def test_probability_out_of_range(tmp_path):
    p = tmp_path / "theses.toml"
    p.write_text('[[thesis]]\nid = "t"\ntitle = "T"\nstatement = "S"\nprobability = 1.5\n')
    with pytest.raises(ConfigError) as e:
        load_theses(p)
    assert e.value.line == 5
