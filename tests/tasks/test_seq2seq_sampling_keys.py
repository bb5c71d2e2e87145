"""Seq2Seq's scheduled-sampling draws: keyed by (seed, epoch, example row,
step), so they do not depend on the batch an example sits in (the rank-exact
distributed run rests on this, tests/distributed) and a run resumed in the
middle of an epoch replays them."""

import numpy as np

from fastrnn.tasks.seq2seq import Seq2Seq, _row_uniforms

from task_data import SaveAt
from test_seq2seq import random_strings, reverse


def test_row_draws_do_not_depend_on_the_batch():
    rows = np.arange(500)
    draws = _row_uniforms((7, 0), rows, 12)
    assert draws.shape == (12, 500) and draws.min() >= 0 and draws.max() < 1
    part = np.array([499, 3, 250])
    assert np.array_equal(_row_uniforms((7, 0), part, 5), draws[:5, part])
    assert abs(draws.mean() - 0.5) < 0.01 and abs(draws.var() - 1 / 12) < 0.005
    # neighbouring rows, steps, epochs and seeds draw unrelated numbers
    assert abs(np.corrcoef(draws[:, :-1].ravel(), draws[:, 1:].ravel())[0, 1]) < 0.03
    assert abs(np.corrcoef(draws[:-1].ravel(), draws[1:].ravel())[0, 1]) < 0.03
    for key in ((7, 1), (8, 0), (7, 0, 1)):
        assert abs(np.corrcoef(draws.ravel(), _row_uniforms(key, rows, 12).ravel())[0, 1]) \
            < 0.03, key


def test_mid_epoch_resume_replays_the_scheduled_sampling_draws(tmp_path):
    rng = np.random.default_rng(3)
    sources = random_strings(rng, 60)
    options = dict(epochs=2, batch_size=8, teacher_forcing=0.5, verbose=0)
    checkpoint = tmp_path / "ckpt.npz"
    full = Seq2Seq(hidden_size=8, embedding_dim=4, seed=4)
    full.fit(sources, reverse(sources), callbacks=[SaveAt(checkpoint, 1, 3)], **options)

    def resume(epoch_kept):
        model = Seq2Seq(hidden_size=8, embedding_dim=4, seed=4)
        if not epoch_kept:
            model.load_extra_state = lambda state: None
        return model.fit(sources, reverse(sources), resume_from=checkpoint, **options)

    resumed = resume(epoch_kept=True)
    for a, b in zip(full.modules(), resumed.modules()):
        for name, value in a.state_dict().items():
            np.testing.assert_array_equal(b.state_dict()[name], value, err_msg=name)
    # the test can fail: a resumed run that forgets the epoch draws epoch 0's numbers
    forgot = resume(epoch_kept=False)
    assert not all(np.array_equal(b.state_dict()[name], value)
                   for a, b in zip(full.modules(), forgot.modules())
                   for name, value in a.state_dict().items())
    assert full.extra_state() == {"sampling_epoch": 1}
