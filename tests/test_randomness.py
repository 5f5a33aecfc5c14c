"""Named random streams: derived from the run seed by the name, independent of each
other, and continued where a checkpoint left them."""

from __future__ import annotations

import pytest
import torch

from debiasbench.core.randomness import RandomStreams, RepeatedInitWarning, derive_seed


def test_a_stream_seed_depends_on_the_run_seed_and_the_name_only():
    assert derive_seed(0, "jtt.identifier_init") == derive_seed(0, "jtt.identifier_init")
    seeds = {derive_seed(seed, name) for seed in (0, 1, 2) for name in ("a", "b", "dfr.draws", "jtt.order")}
    assert len(seeds) == 12  # no two (seed, name) pairs collide, unlike offsets added to the seed
    assert all(0 <= s < 2**63 for s in seeds)


def test_asking_for_a_new_stream_does_not_shift_the_others():
    alone = RandomStreams(0, torch.device("cpu"))
    first = torch.rand(4, generator=alone.get("b"))
    crowded = RandomStreams(0, torch.device("cpu"))
    torch.rand(100, generator=crowded.get("a"))
    assert torch.equal(torch.rand(4, generator=crowded.get("b")), first)
    assert crowded.get("b") is crowded.get("b")


def test_the_train_stream_is_the_run_seed_itself():
    streams = RandomStreams(7, torch.device("cpu"))
    assert torch.equal(torch.rand(3, generator=streams.get(RandomStreams.TRAIN)),
                       torch.rand(3, generator=torch.Generator().manual_seed(7)))


def test_saved_streams_continue_where_they_stopped_including_ones_not_yet_asked_for():
    streams = RandomStreams(3, torch.device("cpu"))
    torch.rand(5, generator=streams.get("a"))
    torch.rand(5, generator=streams.get("b", device="cpu"))
    state = streams.state_dict()
    expected = (torch.rand(3, generator=streams.get("a")), torch.rand(3, generator=streams.get("b")))
    restored = RandomStreams(3, torch.device("cpu"))
    restored.load_state_dict(state)
    assert torch.equal(torch.rand(3, generator=restored.get("a")), expected[0])
    assert torch.equal(torch.rand(3, generator=restored.get("b")), expected[1])


def test_init_blocks_draw_from_their_stream_and_leave_the_global_state_alone():
    streams = RandomStreams(0, torch.device("cpu"))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    with streams.init("model_a"):
        a = torch.nn.Linear(4, 4).weight.detach().clone()
    with pytest.warns(RepeatedInitWarning), streams.init("model_a"):  # the same draws again, as it says
        again = torch.nn.Linear(4, 4).weight.detach().clone()
    with streams.init("model_b"):
        b = torch.nn.Linear(4, 4).weight.detach().clone()
    assert torch.equal(a, again) and not torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), before)
