"""Invalid settings raise the typed ConfigError, which is a FakeprobeError (the command line
prints one line) and a ValueError (callers that catch that keep working)."""

from __future__ import annotations

import pytest

from fakeprobe.classifiers.aggregate import Aggregation
from fakeprobe.core.config import ExtractorConfig, InvalidConfig
from fakeprobe.errors import ConfigError, FakeprobeError
from fakeprobe.synth.blend import BlendConfig
from fakeprobe.training.finetune import AugmentConfig


@pytest.mark.parametrize("make, match", [
    (lambda: ExtractorConfig(frames=0), "frames must be a whole number"),
    (lambda: ExtractorConfig(track_iou=2.0), "track_iou"),
    (lambda: ExtractorConfig(min_face_score=1.5), "min_face_score"),
    (lambda: Aggregation(method="median-ish"), "unknown aggregator"),
    (lambda: BlendConfig(mask="star"), "BlendConfig.mask"),
    (lambda: AugmentConfig.only(["rotate"]), "unknown augmentation"),
])
def test_an_invalid_setting_is_a_config_error(make, match):
    with pytest.raises(ConfigError, match=match) as caught:
        make()
    assert isinstance(caught.value, FakeprobeError)
    assert isinstance(caught.value, ValueError)


def test_a_stored_config_that_does_not_parse_is_a_config_error_too():
    with pytest.raises(InvalidConfig) as caught:
        ExtractorConfig.from_dict({"frames": -3})
    assert isinstance(caught.value, ConfigError)
