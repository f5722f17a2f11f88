"""The trainer: EMA arithmetic, the loop reduces a loss, honours its budgets, and is deterministic."""

import pytest
import torch
from torch import nn

from handbook.device import make_generator
from handbook.training import EMA, History, train

IN_FEATURES = 4
BATCH = 32


def _model(seed: int = 0) -> nn.Module:
    model = nn.Linear(IN_FEATURES, 1)
    g = make_generator(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


def _regression_batches(seed: int):
    """A callable step -> (x, y) for y = x @ w_true + 0.5, drawn from its own generator."""
    g = make_generator(seed)
    w_true = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])

    def batch(step):
        x = torch.randn(BATCH, IN_FEATURES, generator=g)
        return x, x @ w_true + 0.5

    return batch


def _mse(model, batch):
    x, y = batch
    return nn.functional.mse_loss(model(x), y)


def test_ema_one_update_is_the_convex_combination():
    model = _model(0)
    ema = EMA(model, decay=0.9)
    old = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.ones_like(p) * 2.0)
    ema.update(model)
    new = model.state_dict()
    for k, avg in ema.state_dict().items():
        torch.testing.assert_close(avg, 0.9 * old[k] + 0.1 * new[k], rtol=0, atol=1e-6)
    assert ema.num_updates == 1
    # The average is a frozen copy: it must not share storage or gradients with the model.
    assert all(not p.requires_grad for p in ema.module.parameters())
    assert ema.module.weight.data_ptr() != model.weight.data_ptr()


def test_ema_copy_to_and_state_dict_round_trip():
    model = _model(0)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.zero_()
    ema.update(model)
    target = _model(1)
    ema.copy_to(target)
    torch.testing.assert_close(target.weight, ema.module.weight)
    other = EMA(_model(2), decay=0.5)
    other.load_state_dict(ema.state_dict())
    torch.testing.assert_close(other.module.weight, ema.module.weight)


def test_ema_rejects_bad_input():
    with pytest.raises(ValueError, match="decay"):
        EMA(_model(0), decay=1.0)
    with pytest.raises(ValueError, match="model"):
        EMA("not a model")
    ema = EMA(_model(0))
    with pytest.raises(ValueError, match="model"):
        ema.update(nn.Linear(IN_FEATURES, 2, bias=False))


def test_train_reduces_the_loss_and_runs_exactly_steps():
    model = _model(0)
    history = train(model, _mse, _regression_batches(0), steps=200, lr=0.05, progress=False)
    assert isinstance(history, History)
    assert history.steps == 200 and len(history.losses) == 200
    assert history.stopped_by == "steps"
    assert sum(history.losses[-10:]) / 10 < 0.01 * sum(history.losses[:10]) / 10


def test_train_accepts_an_iterable_and_restarts_it():
    batches = [_regression_batches(0)(i) for i in range(3)]  # shorter than steps: several epochs
    history = train(_model(0), _mse, batches, steps=7, progress=False)
    assert history.steps == 7


def test_train_is_deterministic_with_a_seeded_generator():
    runs = []
    for _ in range(2):
        model = _model(0)
        history = train(model, _mse, _regression_batches(123), steps=20, ema_decay=0.9, progress=False)
        runs.append((model.weight.clone(), history.ema.module.weight.clone(), history.losses))
    assert torch.equal(runs[0][0], runs[1][0])
    assert torch.equal(runs[0][1], runs[1][1])
    assert runs[0][2] == runs[1][2]
    # A different data seed gives a different run, so the test above can fail.
    other = _model(0)
    train(other, _mse, _regression_batches(7), steps=20, progress=False)
    assert not torch.equal(other.weight, runs[0][0])


def test_train_max_seconds_stops_cleanly_and_records_the_steps():
    def slow_batch(step):
        # Burn a little time per step so the budget is reached long before 10**6 steps.
        x = torch.randn(BATCH, IN_FEATURES)
        for _ in range(200):
            x = x + 0.0
        return x, x.sum(dim=1, keepdim=True)

    history = train(_model(0), _mse, slow_batch, steps=10**6, max_seconds=0.2, progress=False)
    assert history.stopped_by == "max_seconds"
    assert 1 <= history.steps < 10**6
    assert len(history.losses) == history.steps
    assert history.seconds >= 0.2


def test_train_callback_sees_every_step_and_can_stop():
    seen = []

    def callback(step, loss, model):
        seen.append(step)
        return step == 5

    history = train(_model(0), _mse, _regression_batches(0), steps=50, callback=callback, progress=False)
    assert seen == [1, 2, 3, 4, 5]
    assert history.steps == 5 and history.stopped_by == "callback"


def test_train_grad_clip_bounds_the_update():
    # With SGD(lr=1) and clipping to norm c, one step moves the parameters by at most c.
    model = _model(0)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    big = lambda step: (torch.full((BATCH, IN_FEATURES), 100.0), torch.zeros(BATCH, 1))  # noqa: E731
    train(model, _mse, big, steps=1, optimizer=torch.optim.SGD(model.parameters(), lr=1.0), grad_clip=0.5, progress=False)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm() <= 0.5 + 1e-5


def test_train_scheduler_is_stepped():
    model = _model(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    train(model, _mse, _regression_batches(0), steps=3, optimizer=opt, scheduler=sched, progress=False)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)


def test_train_rejects_bad_input_and_a_nan_loss():
    model, batches = _model(0), _regression_batches(0)
    with pytest.raises(ValueError, match="steps"):
        train(model, _mse, batches, steps=-1, progress=False)
    with pytest.raises(ValueError, match="max_seconds"):
        train(model, _mse, batches, steps=1, max_seconds=0, progress=False)
    with pytest.raises(ValueError, match="batches"):
        train(model, _mse, 42, steps=1, progress=False)
    with pytest.raises(ValueError, match="batches"):
        train(model, _mse, [], steps=1, progress=False)
    with pytest.raises(ValueError, match="model"):
        train("model", _mse, batches, steps=1, progress=False)
    with pytest.raises(ValueError, match="loss_fn"):
        train(model, lambda m, b: m(b[0]), batches, steps=1, progress=False)  # not a scalar
    with pytest.raises(FloatingPointError, match="step 1"):
        train(model, lambda m, b: _mse(m, b) * float("nan"), batches, steps=1, progress=False)


def test_replace_config_replaces_fields_and_names_unknown_options():
    import dataclasses

    from handbook.training import replace_config

    @dataclasses.dataclass(frozen=True)
    class Recipe:
        lr: float = 1e-3
        steps: int = 10

    base = Recipe()
    assert replace_config(base, {"lr": 0.1}) == Recipe(lr=0.1, steps=10) and base == Recipe()
    assert replace_config(base, {}) == base
    with pytest.raises(ValueError, match=r"unknown training options \['stpes'\]; expected some of \['lr', 'steps'\]"):
        replace_config(base, {"stpes": 3})


def test_warmup_cosine_warms_up_linearly_then_decays_to_final():
    from handbook.training import warmup_cosine

    assert [warmup_cosine(s, 4, 20) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert warmup_cosine(4, 4, 20) == 1.0                                  # the cosine starts at its top
    assert warmup_cosine(12, 4, 20, final=0.1) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway
    factors = [warmup_cosine(s, 4, 20, final=0.1) for s in range(4, 21)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))              # never rises after warm-up
    assert warmup_cosine(20, 4, 20, final=0.1) == pytest.approx(0.1)
    assert warmup_cosine(500, 4, 20, final=0.1) == pytest.approx(0.1)     # stays at final past total


def test_train_with_warmup_cosine_is_adamw_with_the_factor_and_returns_the_ema_in_eval_mode():
    from handbook.training import mean_of_last, train_with_warmup_cosine, warmup_cosine

    x, y = torch.randn(32, 3, generator=make_generator(0)), torch.randn(32, 1, generator=make_generator(1))

    def loss_fn(net, batch):
        return ((net(batch[0]) - batch[1]) ** 2).mean()

    def fresh():
        torch.manual_seed(0)
        return nn.Linear(3, 1)

    model = fresh()
    ema_model, history = train_with_warmup_cosine(model, loss_fn, lambda step: (x, y), 10, lr=0.1, warmup=3,
                                                  final_lr_fraction=0.1, ema_decay=0.9, progress=False)
    assert history.steps == 10 and ema_model is history.ema.module and not ema_model.training
    # the same as spelling the recipe out: AdamW (no weight decay) stepped by LambdaLR(warmup_cosine)
    by_hand = fresh()
    optimizer = torch.optim.AdamW(by_hand.parameters(), lr=0.1, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, 3, 10, 0.1))
    train(by_hand, loss_fn, lambda step: (x, y), 10, optimizer=optimizer, scheduler=scheduler, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), by_hand.parameters()))
    plain, _ = train_with_warmup_cosine(fresh(), loss_fn, lambda step: (x, y), 2, lr=0.1, warmup=1,
                                        final_lr_fraction=0.0, progress=False)
    assert isinstance(plain, nn.Linear) and not plain.training                  # no EMA: the model itself
    assert mean_of_last([1.0, 2.0, 3.0, 4.0], 2) == 3.5 and mean_of_last([5.0], 100) == 5.0
    assert mean_of_last([], 100) is None
