"""A network's predictors are cached with the network, and go when it goes."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

from worker.engine.predictor import Predictor
from worker.io.checkpoint import load_model


def test_a_network_and_its_predictors_are_freed_once_nothing_holds_them(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir)
    predictor = Predictor.for_model(model, precision="fp32", batch_size=4)
    assert Predictor.for_model(model, precision="fp32", batch_size=4) is predictor
    net, held = weakref.ref(model.net), weakref.ref(predictor)
    del model, predictor
    gc.collect()
    assert net() is None and held() is None
