"""One schema of the method's parameters: the API's request derives from it, every door refuses a bad value in
the same words, plain averaging is "none" everywhere, the card is the one source of defaults."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest
from pydantic import ValidationError

from app.api.schemas import JobCreate
from app.api.services.tiles import TileStyle
from app.cli.options import method_value
from models.card import MethodDefaults, ModelCard
from models.errors import InvalidParameter
from tests.conftest import REPO
from worker.params import METHOD_FIELDS, PLAIN_AVERAGING, MethodParams, SegmentParams
from worker.plan import plan_mosaic

CARD_DEFAULTS = MethodDefaults(cam="scorecam", step=40, sigma=30.0, threshold=0.3, chosen_by="a test")


def test_the_request_schema_is_the_parameter_schema_plus_what_to_run_it_on() -> None:
    assert issubclass(JobCreate, MethodParams)
    assert set(JobCreate.model_fields) - set(MethodParams.model_fields) == {"mosaic_id", "model"}
    request, params = JobCreate.model_json_schema(), MethodParams.model_json_schema()
    for name, schema in params["properties"].items():
        assert request["properties"][name] == schema, name
    assert "sigma_px" not in request["properties"]
    assert "maximum" not in json.dumps(request["properties"]["step"])  # the window is the one limit


def bad(values: dict[str, Any]) -> str:
    with pytest.raises(InvalidParameter) as err:
        MethodParams.parse(values)
    return str(err.value)


def cli_message(option: str, text: str) -> str:
    with pytest.raises(argparse.ArgumentTypeError) as err:
        method_value(option)(text)
    return str(err.value)


@pytest.mark.parametrize(
    ("field", "value", "text"),
    [
        ("step", 0, "0"),
        ("sigma", -1, "-1"),
        ("sigma", 0, "0"),
        ("threshold", 1.5, "1.5"),
        ("downsample", 65, "65"),
        ("scorecam_skip_below", 1.0, "1"),
        ("parallel", 0, "0"),
    ],
)
def test_a_bad_value_reads_the_same_from_a_request_and_the_command_line(
    field: str, value: Any, text: str
) -> None:
    from_request = bad({field: value})
    assert from_request.startswith(f"{field}: ")
    assert cli_message(field, text) == from_request
    if field in METHOD_FIELDS:  # a card's defaults are held to the same rule, in the same words
        with pytest.raises(ValidationError) as err:
            MethodDefaults.model_validate({"sigma": 1.0, "threshold": 0.5, field: value})
        assert f"{field}: {err.value.errors()[0]['msg']}" == from_request


def test_sigma_is_a_number_of_pixels_or_none() -> None:
    assert MethodParams.parse({"sigma": 80}).sigma == 80.0
    assert MethodParams.parse({"sigma": "none"}).sigma == PLAIN_AVERAGING
    assert method_value("sigma")("NONE") == PLAIN_AVERAGING
    assert method_value("sigma")("12.5") == 12.5
    assert MethodParams.parse({"sigma": None}).sigma is None  # not given: the card's
    for value in (True, float("nan"), float("inf"), "wide", -3):
        assert bad({"sigma": value}).startswith('sigma: must be a number of pixels > 0 or "none"')


def test_values_not_given_take_the_cards_defaults_and_say_so() -> None:
    params = MethodParams.parse({"step": 16, "downsample": 1}).resolve(CARD_DEFAULTS)
    assert (params.cam, params.step, params.sigma, params.threshold) == ("scorecam", 16, 30.0, 0.3)
    assert params.defaults_from == ("cam", "sigma", "threshold")
    assert params.parallel == 1
    assert MethodParams(parallel=3).resolve(CARD_DEFAULTS, parallel=2).parallel == 3
    assert MethodParams().resolve(CARD_DEFAULTS, parallel=2).parallel == 2
    plain = MethodParams(sigma="none").resolve(CARD_DEFAULTS)
    assert plain.sigma == PLAIN_AVERAGING and "sigma" not in plain.defaults_from


def test_a_jobs_keyword_arguments_carry_the_parameters_whole() -> None:
    params = MethodParams(step=16, sigma="none", parallel=2).resolve(CARD_DEFAULTS)
    again = SegmentParams.from_job(json.loads(json.dumps(params.model_dump())))
    assert again == params
    assert set(params.identity()) == set(SegmentParams.model_fields) - {"defaults_from", "parallel"}
    assert (
        params.identity() == MethodParams(step=16, sigma="none", parallel=5).resolve(CARD_DEFAULTS).identity()
    )
    queued_earlier = {**params.model_dump(), "sigma": None}  # plain averaging as an earlier version wrote it
    assert SegmentParams.from_job(queued_earlier) == params
    with pytest.raises(InvalidParameter, match=r"^sigma: "):
        SegmentParams.from_job({**params.model_dump(), "sigma": -1})


def test_the_window_is_checked_in_one_place_with_one_message() -> None:
    with pytest.raises(InvalidParameter) as err:
        plan_mosaic(
            SegmentParams(step=300), width=2000, height=2000, file_pixel_size_um=None, window=256,
            model_pixel_size_um=2.0,
        )  # fmt: skip
    assert str(err.value) == "step: must be at most the model's window (256 px), got 300"
    assert err.value.field == "step"


def test_the_card_is_the_one_source_of_the_method_defaults() -> None:
    data = json.loads((REPO / "models/zoo/phantom-b2/card.json").read_text())
    assert "sigma" in data["defaults"] and "sigma_px" not in data["defaults"]
    card = ModelCard.model_validate(data)
    assert set(METHOD_FIELDS) <= set(card.method_defaults().model_dump())
    # cards written before the field was named sigma are read as they are; null was plain averaging
    older = MethodDefaults.model_validate({"sigma_px": None, "threshold": 0.2})
    assert older.sigma == PLAIN_AVERAGING
    assert MethodDefaults.model_validate({"sigma_px": 80.0, "threshold": 0.2}).sigma == 80.0
    with pytest.raises(TypeError):
        TileStyle()  # type: ignore[call-arg]  # a tile's threshold is the job's, never a default of its own
