"""The garbage collector's settings for a long-running process: thresholds raised, never lowered, start-up frozen."""

import gc

import pytest

from machinery import collector


@pytest.fixture
def restored():
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_tune_raises_the_thresholds_and_freezes_what_the_process_holds(restored):
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    chosen = collector.tune()
    assert chosen == collector.THRESHOLDS
    assert gc.get_threshold() == collector.THRESHOLDS
    assert gc.get_freeze_count() > 1000  # the modules and objects alive now, out of every later collection


def test_tune_keeps_a_threshold_a_deployment_set_higher(restored):
    gc.set_threshold(100_000, 5, 50)
    assert collector.tune() == (100_000, 20, 50)
    assert gc.get_threshold() == (100_000, 20, 50)


def test_gunicorns_worker_tunes_it_once_its_app_is_loaded(restored):
    from machinery import gunicorn_conf

    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    gunicorn_conf.post_worker_init(None)
    assert gc.get_threshold() == collector.THRESHOLDS
    assert gc.get_freeze_count() > 0
