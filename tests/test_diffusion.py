"""DDPM/DDIM: parity with diffusers, the maths checked against independent derivations, the samplers
on a Gaussian data set whose optimal denoiser is known exactly, determinism, and every bad input."""

import math

import pytest
import torch

from handbook.diffusion import (
    NoiseSchedule,
    classifier_free_guidance,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    ddpm_sample,
    ddpm_step,
    eps_from_prediction,
    eps_from_v,
    posterior,
    predict_eps,
    predict_x0,
    q_sample,
    training_loss,
    v_target,
    x0_from_v,
)

F64 = torch.float64
SHAPE = (4, 2, 3, 3)  # (B, C, Hh, Ww), tiny on purpose


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(shape, seed, dtype=torch.float32):
    return torch.randn(shape, generator=_gen(seed), dtype=dtype)


def _diffusers():
    return pytest.importorskip("diffusers")


def _ddpm_scheduler(schedule_name: str, T: int, **kwargs):
    """A diffusers DDPMScheduler configured like our NoiseSchedule.<schedule_name>(T)."""
    diffusers = _diffusers()
    if schedule_name == "linear":  # our linear schedule is scaled by 1000 / T
        return diffusers.DDPMScheduler(T, beta_start=1e-4 * 1000 / T, beta_end=0.02 * 1000 / T, **kwargs)
    return diffusers.DDPMScheduler(T, beta_schedule="squaredcos_cap_v2", **kwargs)


def _in_float64(scheduler, schedule: NoiseSchedule):
    """diffusers keeps alpha_bar in float32; give it ours in float64 so that a step agrees to ~1e-12
    and any disagreement is a formula, not rounding (its float32 1 - a_t / a_prev loses ~1e-4)."""
    scheduler.alphas_cumprod = schedule.alpha_bars.clone()
    scheduler.one = torch.tensor(1.0, dtype=F64)
    scheduler.final_alpha_cumprod = torch.tensor(1.0, dtype=F64)
    return scheduler


def _gaussian_eps(schedule, s):
    """The exact eps predictor for data ~ N(0, s^2 I): E[eps | x_t] = sqrt(1-ab) x_t / (ab s^2 + 1 - ab)."""

    def model(x, t, cond=None):
        ab = schedule.alpha_bars[t].reshape(-1, *([1] * (x.dim() - 1)))
        return (torch.sqrt(1 - ab) / (ab * s**2 + 1 - ab) * x.double()).to(x.dtype)

    return model


def _zeros_model(x, t, cond=None):
    return torch.zeros_like(x)


# --- The schedule -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("T", [1000, 50])
def test_alpha_bars_match_diffusers(name, T):
    schedule = getattr(NoiseSchedule, name)(T)
    ref = _ddpm_scheduler(name, T).alphas_cumprod.double()
    assert schedule.alpha_bars.dtype == F64 and schedule.alpha_bars.shape == (T,)
    # diffusers accumulates in float32: agree to its precision, relative to the value.
    torch.testing.assert_close(schedule.alpha_bars, ref, rtol=5e-5, atol=1e-7)


def test_schedule_derived_quantities():
    s = NoiseSchedule.linear(100)
    assert s.T == 100
    torch.testing.assert_close(s.betas[[0, -1]], torch.tensor([1e-3, 0.2], dtype=F64))  # scaled by 1000/T
    torch.testing.assert_close(s.alphas, 1 - s.betas)
    torch.testing.assert_close(s.alpha_bars, torch.cumprod(1 - s.betas, 0))
    assert s.alpha_bars_prev[0] == 1 and torch.equal(s.alpha_bars_prev[1:], s.alpha_bars[:-1])
    assert s.posterior_variance[0] == 0 and bool((s.posterior_variance[1:] < s.betas[1:]).all())
    snr = s.snr(torch.arange(100))
    assert bool((snr[1:] < snr[:-1]).all()) and math.isclose(s.snr(3).item(), snr[3].item())
    # from_betas rebuilds the same schedule; the cosine one is capped at 0.999 at the end.
    torch.testing.assert_close(NoiseSchedule.from_betas(s.betas.tolist()).alpha_bars, s.alpha_bars)
    assert NoiseSchedule.cosine(1000).betas.max().item() == pytest.approx(0.999)


def test_schedule_is_frozen():
    s = NoiseSchedule.linear(10 * 5)
    with pytest.raises(AttributeError):
        s.betas = torch.full((50,), 0.1, dtype=F64)


# --- The forward process ------------------------------------------------------------------------


def test_q_sample_matches_diffusers_add_noise():
    T = 50
    schedule = NoiseSchedule.linear(T)
    x0, eps = _randn(SHAPE, 0), _randn(SHAPE, 1)
    t = torch.tensor([0, 7, 31, T - 1])
    ref = _ddpm_scheduler("linear", T).add_noise(x0, eps, t)
    ours = q_sample(schedule, x0, t, eps)
    assert ours.dtype == x0.dtype
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    # an int t is the same step for every batch element
    torch.testing.assert_close(q_sample(schedule, x0, 7, eps), q_sample(schedule, x0, torch.full((4,), 7), eps))


def test_q_sample_equals_running_the_chain_step_by_step():
    """x_t in one jump (eq. 4) has the law of t+1 noising steps x <- sqrt(1-beta) x + sqrt(beta) z."""
    schedule, n, t = NoiseSchedule.linear(50), 20000, 30
    x0 = torch.tensor([-1.0, 0.5], dtype=F64).repeat(n // 2)  # (n,) two point masses
    g = _gen(0)
    x = x0.clone()
    for s in range(t + 1):
        z = torch.randn(n, generator=g, dtype=F64)
        x = torch.sqrt(1 - schedule.betas[s]) * x + torch.sqrt(schedule.betas[s]) * z  # q(x_t | x_{t-1})
    jump = q_sample(schedule, x0, t, torch.randn(n, generator=g, dtype=F64))
    ab = schedule.alpha_bars[t]
    for sample in (x, jump):
        for point in (-1.0, 0.5):
            chosen = sample[x0 == point]
            assert chosen.mean().item() == pytest.approx(math.sqrt(ab) * point, abs=0.03)
            assert chosen.std().item() == pytest.approx(math.sqrt(1 - ab), rel=0.03)


def test_parametrisations_invert_each_other():
    schedule = NoiseSchedule.cosine(100)
    x0, eps, t = _randn(SHAPE, 0, F64), _randn(SHAPE, 1, F64), torch.tensor([0, 10, 50, 99])
    x_t = q_sample(schedule, x0, t, eps)
    torch.testing.assert_close(predict_x0(schedule, x_t, t, eps), x0)
    torch.testing.assert_close(predict_eps(schedule, x_t, t, x0), eps)
    v = v_target(schedule, x0, t, eps)
    torch.testing.assert_close(eps_from_v(schedule, x_t, t, v), eps)
    torch.testing.assert_close(x0_from_v(schedule, x_t, t, v), x0)
    for prediction, output in (("eps", eps), ("x0", x0), ("v", v)):
        torch.testing.assert_close(eps_from_prediction(schedule, x_t, t, output, prediction), eps)


def test_posterior_is_bayes_rule_and_a_point_mass_at_t0():
    """q(x_{t-1}|x_t, x0) ∝ N(x_{t-1}; sqrt(ab_prev) x0, 1 - ab_prev) N(x_t; sqrt(a_t) x_{t-1}, beta_t)."""
    schedule = NoiseSchedule.linear(100)
    x0, x_t = _randn(SHAPE, 0, F64), _randn(SHAPE, 1, F64)
    t = torch.tensor([1, 5, 60, 99])
    mean, var = posterior(schedule, x0, x_t, t)
    ab_prev = schedule.alpha_bars_prev[t].reshape(-1, 1, 1, 1)
    a, beta = schedule.alphas[t].reshape(-1, 1, 1, 1), schedule.betas[t].reshape(-1, 1, 1, 1)
    precision = 1 / (1 - ab_prev) + a / beta  # product of two Gaussians in x_{t-1}
    torch.testing.assert_close(var, 1 / precision)
    torch.testing.assert_close(mean, (ab_prev.sqrt() * x0 / (1 - ab_prev) + a.sqrt() * x_t / beta) / precision)
    # At t = 0 the previous state is the data itself.
    mean0, var0 = posterior(schedule, x0, x_t, 0)
    torch.testing.assert_close(mean0, x0)
    assert var0.shape == (1, 1, 1, 1) and var0.item() == 0


# --- One reverse step: parity with diffusers ----------------------------------------------------


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("clip", [True, False])
def test_ddpm_step_matches_diffusers(variance, clip):
    T = 100
    schedule = NoiseSchedule.linear(T)
    ref = _in_float64(_ddpm_scheduler("linear", T, variance_type=variance, clip_sample=clip), schedule)
    ref32 = _ddpm_scheduler("linear", T, variance_type=variance, clip_sample=clip)  # its own float32 betas
    x_t, eps = 1.5 * _randn(SHAPE, 0, F64), _randn(SHAPE, 1, F64)
    for t in (0, 1, 10, 50, T - 1):
        expected = ref.step(eps, t, x_t, generator=_gen(t)).prev_sample  # noise = randn(shape, generator)
        got = ddpm_step(schedule, x_t, t, eps, noise=_randn(SHAPE, t, F64), variance=variance, clip_x0=clip)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
        # the same through a generator, and within float32 rounding of diffusers' own float32 run
        via_generator = ddpm_step(schedule, x_t, t, eps, variance=variance, clip_x0=clip, generator=_gen(t))
        torch.testing.assert_close(via_generator, got)
        expected32 = ref32.step(eps.float(), t, x_t.float(), generator=_gen(t)).prev_sample
        torch.testing.assert_close(ddpm_step(schedule, x_t.float(), t, eps.float(), variance=variance, clip_x0=clip,
                                             generator=_gen(t)), expected32, rtol=1e-3, atol=1e-3)


def test_ddpm_step_mean_is_the_posterior_mean_at_the_true_x0():
    schedule = NoiseSchedule.linear(100)
    x0 = _randn(SHAPE, 0, F64).clamp(-1, 1)
    eps = _randn(SHAPE, 1, F64)
    t = torch.tensor([0, 3, 40, 99])
    x_t = q_sample(schedule, x0, t, eps)
    got = ddpm_step(schedule, x_t, t, eps, noise=torch.zeros(SHAPE, dtype=F64))
    torch.testing.assert_close(got, posterior(schedule, x0, x_t, t)[0])
    # with noise, only elements with t > 0 move (no noise at t = 0), by sqrt(beta_tilde) * noise
    noisy = ddpm_step(schedule, x_t, t, eps, noise=torch.ones(SHAPE, dtype=F64))
    torch.testing.assert_close((noisy - got)[:, 0, 0, 0], schedule.posterior_variance[t].sqrt())
    large = ddpm_step(schedule, x_t, t, eps, noise=torch.ones(SHAPE, dtype=F64), variance="fixed_large")
    torch.testing.assert_close((large - got)[:, 0, 0, 0], schedule.betas[t].sqrt() * (t > 0))


@pytest.mark.parametrize("T,steps", [(1000, 50), (1000, 30), (1000, 1), (50, 7), (50, 50)])
def test_ddim_timesteps_match_diffusers(T, steps):
    ref = _diffusers().DDIMScheduler(T)
    ref.set_timesteps(steps)
    ours = ddim_timesteps(T, steps)
    assert ours.dtype == torch.long and torch.equal(ours, ref.timesteps)
    assert ours[-1] == 0 and bool((ours[1:] < ours[:-1]).all())


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("clip", [False, True])
def test_ddim_step_matches_diffusers(eta, clip):
    T, steps = 100, 10
    schedule = NoiseSchedule.linear(T)
    ref = _in_float64(_diffusers().DDIMScheduler(T, beta_start=1e-3, beta_end=0.2, clip_sample=clip), schedule)
    ref.set_timesteps(steps)
    x_t, eps = 1.5 * _randn(SHAPE, 0, F64), _randn(SHAPE, 1, F64)
    timesteps = ddim_timesteps(T, steps).tolist()
    for i, t in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < steps else -1
        z = _randn(SHAPE, 10 + i, F64)
        # clip: x0_hat clipped and eps re-derived from it (use_clipped_model_output=True)
        expected = ref.step(eps, t, x_t, eta=eta, variance_noise=z, use_clipped_model_output=clip)
        got, x0_hat = ddim_step(schedule, x_t, t, t_prev, eps, eta=eta, noise=z, clip_x0=clip, return_x0=True)
        torch.testing.assert_close(got, expected.prev_sample, rtol=1e-10, atol=1e-10)
        # the x0 guess the step used is diffusers' pred_original_sample (clipped with clip_sample)
        torch.testing.assert_close(x0_hat, expected.pred_original_sample, rtol=1e-10, atol=1e-10)
        assert torch.equal(ddim_step(schedule, x_t, t, t_prev, eps, eta=eta, noise=z, clip_x0=clip), got)


def test_ddim_with_eta_1_and_every_step_is_ddpm():
    """sigma(eta=1, t_prev=t-1)^2 = beta_tilde_t and the means agree (Song et al., section 4.1)."""
    schedule = NoiseSchedule.cosine(100)
    x_t, eps, z = _randn(SHAPE, 0, F64), _randn(SHAPE, 1, F64), _randn(SHAPE, 2, F64)
    for t in (1, 20, 99):
        ddim = ddim_step(schedule, x_t, t, t - 1, eps, eta=1.0, noise=z)
        ddpm = ddpm_step(schedule, x_t, t, eps, noise=z, variance="fixed_small", clip_x0=False)
        torch.testing.assert_close(ddim, ddpm)
    # and eta = 0 is deterministic: the noise is ignored
    torch.testing.assert_close(ddim_step(schedule, x_t, 50, 40, eps, noise=z), ddim_step(schedule, x_t, 50, 40, eps))


# --- Samplers -----------------------------------------------------------------------------------


def test_ddpm_sample_matches_a_diffusers_loop_with_the_same_generator():
    T, s = 50, 0.5
    schedule = NoiseSchedule.linear(T)
    model = _gaussian_eps(schedule, s)
    ref = _ddpm_scheduler("linear", T, clip_sample=True)
    g = _gen(3)
    x = torch.randn(SHAPE, generator=g)  # what diffusers' DDPMPipeline does, written out
    for t in ref.timesteps:
        x = ref.step(model(x, t.reshape(1)), int(t), x, generator=g).prev_sample
    ours = ddpm_sample(model, schedule, SHAPE, generator=_gen(3), progress=False)
    torch.testing.assert_close(ours, x, rtol=1e-3, atol=1e-3)


def test_ddim_sample_matches_a_diffusers_loop_with_the_same_generator():
    T, s, steps = 100, 0.5, 10
    schedule = NoiseSchedule.linear(T)
    model = _gaussian_eps(schedule, s)
    ref = _diffusers().DDIMScheduler(T, beta_start=1e-3, beta_end=0.2, clip_sample=False)
    ref.set_timesteps(steps)
    g = _gen(4)
    x = torch.randn(SHAPE, generator=g)
    x0_guesses = []
    for t in ref.timesteps:
        out = ref.step(model(x, t.reshape(1)), int(t), x, eta=1.0, generator=g)
        x = out.prev_sample
        x0_guesses.append(out.pred_original_sample)
    ours = ddim_sample(model, schedule, SHAPE, steps=steps, eta=1.0, generator=_gen(4), progress=False)
    torch.testing.assert_close(ours, x, rtol=1e-4, atol=1e-4)
    # return_x0: one x0 guess per step, in sampling order, as diffusers' pred_original_sample
    samples, guesses = ddim_sample(model, schedule, SHAPE, steps=steps, eta=1.0, generator=_gen(4), progress=False,
                                   return_x0=True)
    assert torch.equal(samples, ours)
    torch.testing.assert_close(guesses, torch.stack(x0_guesses), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_samplers_reproduce_a_gaussian_data_distribution(sampler):
    """With the exact eps of N(0, s^2 I) data, samples must have std s (pure noise has std 1)."""
    s, shape = 0.5, (200, 20)  # 4000 values; a small batch keeps per-sample gathers cheap
    schedule = NoiseSchedule.linear(1000)
    model = _gaussian_eps(schedule, s)
    if sampler == "ddpm":
        x = ddpm_sample(model, schedule, shape, generator=_gen(0), clip_x0=False, progress=False)
    else:
        # 200 steps: with 50, DDIM's discretisation shrinks this std by ~5% (it vanishes as steps -> T)
        x = ddim_sample(model, schedule, shape, steps=200, generator=_gen(0), progress=False)
    assert x.std().item() == pytest.approx(s, rel=0.05)
    assert abs(x.mean().item()) < 0.03


def test_samplers_agree_across_parametrisations():
    """An x0- or v-predicting network with the same denoiser gives the same samples as eps."""
    s = 0.5
    schedule = NoiseSchedule.linear(100)
    eps_model = _gaussian_eps(schedule, s)

    def x0_model(x, t, cond=None):
        return predict_x0(schedule, x, t, eps_model(x, t))

    def v_model(x, t, cond=None):
        return v_target(schedule, x0_model(x, t), t, eps_model(x, t))

    base = ddim_sample(eps_model, schedule, SHAPE, steps=10, generator=_gen(1), progress=False)
    for prediction, model in (("x0", x0_model), ("v", v_model)):
        other = ddim_sample(model, schedule, SHAPE, steps=10, generator=_gen(1), prediction=prediction, progress=False)
        torch.testing.assert_close(other, base, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_samplers_shape_determinism_and_trajectory(sampler):
    schedule = NoiseSchedule.linear(50)
    run = ddpm_sample if sampler == "ddpm" else ddim_sample
    kwargs = {} if sampler == "ddpm" else {"steps": 5, "eta": 1.0}
    a, traj = run(_zeros_model, schedule, SHAPE, generator=_gen(0), return_trajectory=True, progress=False, **kwargs)
    b = run(_zeros_model, schedule, SHAPE, generator=_gen(0), progress=False, **kwargs)
    c = run(_zeros_model, schedule, SHAPE, generator=_gen(1), progress=False, **kwargs)
    assert a.shape == SHAPE and a.dtype == torch.float32 and bool(torch.isfinite(a).all())
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(traj) == (51 if sampler == "ddpm" else 6) and torch.equal(traj[-1], a)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_sample_returns_the_x0_guess_of_every_step(eta):
    schedule = NoiseSchedule.linear(50)
    model = _gaussian_eps(schedule, 2.0)  # wide data: many x0 guesses fall outside [-1, 1]
    run = dict(steps=5, eta=eta, progress=False)
    plain = ddim_sample(model, schedule, SHAPE, generator=_gen(0), **run)
    samples, x0_guesses = ddim_sample(model, schedule, SHAPE, generator=_gen(0), return_x0=True, **run)
    assert torch.equal(samples, plain)  # the same random draws: bit-identical samples
    assert x0_guesses.shape == (5, *SHAPE) and x0_guesses.dtype == samples.dtype
    # The last step goes to alpha_bar = 1, where x_prev is the x0 guess itself.
    torch.testing.assert_close(x0_guesses[-1], samples)
    # With the trajectory too: (samples, trajectory, x0_guesses); step i's guess is x0_hat of trajectory[i].
    s2, trajectory, g2 = ddim_sample(model, schedule, SHAPE, generator=_gen(0), return_trajectory=True,
                                     return_x0=True, **run)
    assert torch.equal(s2, plain) and torch.equal(g2, x0_guesses) and len(trajectory) == 6
    t0 = ddim_timesteps(50, 5)[0].item()
    torch.testing.assert_close(x0_guesses[0], predict_x0(schedule, trajectory[0], t0, model(trajectory[0], t0)))
    # clip_x0: the guesses are the clipped x0_hat the steps used
    clipped, clipped_guesses = ddim_sample(model, schedule, SHAPE, generator=_gen(0), clip_x0=True, return_x0=True,
                                           **run)
    assert torch.equal(clipped, ddim_sample(model, schedule, SHAPE, generator=_gen(0), clip_x0=True, **run))
    assert clipped_guesses.abs().max() <= 1.0 < x0_guesses.abs().max()
    torch.testing.assert_close(clipped_guesses[-1], clipped)


def test_ddim_sample_x0_guesses_are_the_guided_ones():
    schedule = NoiseSchedule.linear(50)

    def model(x, t, cond):  # a fake conditional eps: shifts by the class index
        return x * 0.1 + cond.reshape(-1, 1).to(x.dtype)

    cond, null = torch.tensor([0, 1, 2]), 5
    kwargs = dict(steps=2, cond=cond, guidance_scale=3.0, null_cond=null, progress=False)
    samples, guesses = ddim_sample(model, schedule, (3, 2), generator=_gen(0), return_x0=True, **kwargs)
    assert torch.equal(samples, ddim_sample(model, schedule, (3, 2), generator=_gen(0), **kwargs))
    x = torch.randn(3, 2, generator=_gen(0))
    t = ddim_timesteps(50, 2)[0].item()
    eps_c, eps_u = model(x, t, cond), model(x, t, torch.full((3,), null))
    torch.testing.assert_close(guesses[0], predict_x0(schedule, x, t, eps_u + 3.0 * (eps_c - eps_u)))


def test_guided_sampling_batches_cond_and_null_and_applies_the_formula():
    schedule = NoiseSchedule.linear(50)
    calls = []

    def model(x, t, cond):  # a fake conditional eps: shifts by the class index
        calls.append((x.shape[0], cond.tolist()))
        return x * 0.1 + cond.reshape(-1, 1).to(x.dtype)

    cond = torch.tensor([0, 1, 2])
    null = 5
    out = ddim_sample(model, schedule, (3, 2), steps=2, cond=cond, guidance_scale=3.0, null_cond=null,
                      generator=_gen(0), progress=False)
    assert calls[0] == (6, [0, 1, 2, 5, 5, 5]) and len(calls) == 2  # one forward per step, 2B
    # the same as guiding by hand: two forwards per step, combined with the formula
    g = _gen(0)
    x = torch.randn(3, 2, generator=g)
    timesteps = ddim_timesteps(50, 2).tolist()
    for t, t_prev in zip(timesteps, timesteps[1:] + [-1]):
        eps_c, eps_u = model(x, t, cond), model(x, t, torch.full((3,), null))
        x = ddim_step(schedule, x, t, t_prev, eps_u + 3.0 * (eps_c - eps_u))
    torch.testing.assert_close(out, x)
    # scale 1 is the conditional model alone
    plain = ddim_sample(model, schedule, (3, 2), steps=2, cond=cond, generator=_gen(0), progress=False)
    guided_1 = ddim_sample(model, schedule, (3, 2), steps=2, cond=cond, guidance_scale=1.0, null_cond=null,
                           generator=_gen(0), progress=False)
    torch.testing.assert_close(guided_1, plain)


def test_classifier_free_guidance_formula():
    u, c = _randn((2, 3), 0), _randn((2, 3), 1)
    torch.testing.assert_close(classifier_free_guidance(u, c, 0.0), u)
    torch.testing.assert_close(classifier_free_guidance(u, c, 1.0), c)
    torch.testing.assert_close(classifier_free_guidance(u, c, 4.0), u + 4.0 * (c - u))


# --- Training -----------------------------------------------------------------------------------


def test_training_loss_draws_t_then_eps_from_the_generator():
    schedule = NoiseSchedule.linear(50)
    x0 = _randn(SHAPE, 0)
    seen = {}

    def model(x_t, t, cond):
        seen.update(x_t=x_t, t=t, cond=cond)
        return torch.zeros_like(x_t)

    loss = training_loss(model, schedule, x0, cond="c", generator=_gen(7))
    g = _gen(7)
    t = torch.randint(0, 50, (SHAPE[0],), generator=g)
    eps = torch.randn(SHAPE, generator=g)
    assert torch.equal(seen["t"], t) and seen["cond"] == "c"
    torch.testing.assert_close(seen["x_t"], q_sample(schedule, x0, t, eps))
    torch.testing.assert_close(loss, (eps**2).mean())  # zero prediction: loss = mean eps^2
    assert torch.equal(loss, training_loss(model, schedule, x0, cond="c", generator=_gen(7)))
    assert not torch.equal(loss, training_loss(model, schedule, x0, cond="c", generator=_gen(8)))
    per_sample = training_loss(model, schedule, x0, generator=_gen(7), reduction="none")
    assert per_sample.shape == (SHAPE[0],)
    torch.testing.assert_close(per_sample.mean(), loss)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_training_loss_is_zero_for_a_perfect_model(prediction):
    schedule = NoiseSchedule.cosine(50)
    x0 = _randn(SHAPE, 0, F64)

    def oracle(x_t, t, cond):  # knows x0, so it knows every target
        eps = predict_eps(schedule, x_t, t, x0)
        return {"eps": eps, "x0": x0, "v": v_target(schedule, x0, t, eps)}[prediction]

    assert training_loss(oracle, schedule, x0, generator=_gen(0), prediction=prediction).item() < 1e-20
    # a fixed t (loss-by-t plots) is used as given
    assert training_loss(_zeros_model, schedule, x0, generator=_gen(0), prediction="x0", t=3).item() == pytest.approx(
        (x0**2).mean().item())


def test_training_loss_condition_dropout():
    schedule = NoiseSchedule.linear(50)
    cond = torch.arange(64)
    seen = []

    def model(x_t, t, c):
        seen.append(c)
        return torch.zeros_like(x_t)

    x0 = torch.zeros(64, 2)
    training_loss(model, schedule, x0, cond=cond, generator=_gen(0), p_uncond=1.0, null_cond=10)
    training_loss(model, schedule, x0, cond=cond, generator=_gen(0), p_uncond=0.5, null_cond=10)
    training_loss(model, schedule, x0, cond=cond, generator=_gen(0))
    assert bool((seen[0] == 10).all())
    dropped = seen[1] == 10
    assert 10 < int(dropped.sum()) < 54 and torch.equal(seen[1][~dropped], cond[~dropped])
    assert torch.equal(seen[2], cond)


# --- Bad input ----------------------------------------------------------------------------------

S = NoiseSchedule.linear(50)
X = torch.zeros(SHAPE)


@pytest.mark.parametrize("call,match", [
    (lambda: NoiseSchedule.from_betas([0.1, 1.0]), "betas"),
    (lambda: NoiseSchedule.from_betas([0.0, 0.1]), "betas"),
    (lambda: NoiseSchedule.from_betas([[0.1, 0.2]]), "betas"),
    (lambda: NoiseSchedule.from_betas([]), "betas"),
    (lambda: NoiseSchedule.from_betas([0.1, float("nan")]), "betas"),
    (lambda: NoiseSchedule.linear(0), "T"),
    (lambda: NoiseSchedule.linear(10), "beta_end"),
    (lambda: NoiseSchedule.cosine(2.5), "T"),
    (lambda: NoiseSchedule.linear(50, beta_start="small"), "beta_start: expected a number"),
    (lambda: NoiseSchedule.linear(50, 0.01, 0.001), r"beta_end: expected a finite number in \[0.01, 0.05\)"),
    (lambda: NoiseSchedule.cosine(50, s=-0.1), "s: expected"),
    (lambda: NoiseSchedule.cosine(50, max_beta=1.0), r"max_beta: expected a finite number in \(0, 1\)"),
    (lambda: q_sample(S, X, 50, X), "t: expected values in 0..49"),
    (lambda: q_sample(S, X, -1, X), "t: expected values"),
    (lambda: q_sample(S, X, torch.tensor([0, 1, 2, 50]), X), "t: expected values"),
    (lambda: q_sample(S, X, torch.tensor([0, 1]), X), "t: expected 4 values"),
    (lambda: q_sample(S, X, torch.zeros(4), X), "t: expected an int"),
    (lambda: q_sample(S, X, 2.0, X), "t: expected an int"),
    (lambda: q_sample(S, X, 1, X[:2]), "eps: expected the shape"),
    (lambda: predict_x0(S, X, 1, X[0]), "eps: expected the shape"),
    (lambda: posterior(S, X[:, :1], X, 1), "x0: expected the shape"),
    (lambda: S.snr(50), "t: expected values"),
    (lambda: eps_from_prediction(S, X, 1, X, "score"), "prediction"),
    (lambda: ddpm_step(S, X, 1, X, variance="learned"), "variance"),
    (lambda: ddpm_step(S, X, 1, X, noise=X[:1]), "noise: expected the shape"),
    (lambda: ddpm_step(S, X, 1, X, noise=X, generator=_gen(0)), "noise"),
    (lambda: ddim_step(S, X, 10, 10, X), "t_prev: expected t_prev < t"),
    (lambda: ddim_step(S, X, 10, -2, X), "t_prev: expected values in -1..49"),
    (lambda: ddim_step(S, X, 10, torch.tensor([1, 2]), X), "t_prev: expected 4 values"),
    (lambda: q_sample(S, [0.0, 1.0], 1, X), "x0: expected a tensor"),
    (lambda: ddim_step(S, X, 10, 5, X, eta=-0.1), "eta"),
    (lambda: ddim_timesteps(50, 0), "steps"),
    (lambda: ddim_timesteps(50, 51), "steps"),
    (lambda: classifier_free_guidance(X, X[:1], 2.0), "eps_cond"),
    (lambda: classifier_free_guidance(X, X, "big"), "scale"),
    (lambda: training_loss(_zeros_model, S, X, prediction="score"), "prediction"),
    (lambda: training_loss(_zeros_model, S, X, reduction="sum"), "reduction"),
    (lambda: training_loss(_zeros_model, S, X, t=50), "t: expected values"),
    (lambda: training_loss(lambda x, t, c: x[:, :1], S, X), "model_output: expected the shape of x0"),
    (lambda: training_loss(_zeros_model, S, X, cond=torch.zeros(4), p_uncond=0.1), "null_cond"),
    (lambda: training_loss(_zeros_model, S, X, cond=torch.zeros(4), p_uncond=1.5, null_cond=0), "p_uncond"),
    (lambda: ddpm_sample(_zeros_model, S, (0, 2), progress=False), "shape"),
    (lambda: ddpm_sample(_zeros_model, S, (2, 2), variance="large", progress=False), "variance"),
    (lambda: ddpm_sample(_zeros_model, S, (2, 2), prediction="noise", progress=False), "prediction"),
    (lambda: ddpm_sample(_zeros_model, S, (2, 2), cond=torch.zeros(3), progress=False), "cond: expected batch size 2"),
    (lambda: ddim_sample(_zeros_model, S, (2, 2), guidance_scale=2.0, progress=False), "cond"),
    (lambda: ddim_sample(_zeros_model, S, (2, 2), cond=torch.zeros(2), guidance_scale=2.0, progress=False),
     "null_cond: required"),
    (lambda: ddim_sample(_zeros_model, S, (2, 2), cond=torch.zeros(2), guidance_scale=2.0, null_cond=torch.zeros(3),
                         progress=False), "null_cond's shape: expected one of"),
    (lambda: ddim_sample(_zeros_model, S, (2, 2), steps=51, progress=False), "steps"),
    (lambda: ddim_sample(_zeros_model, S, (2, 2), eta=-1.0, progress=False), "eta"),
    (lambda: ddim_sample(lambda x, t, c: x[:1], S, (2, 2), steps=2, progress=False), "model_output: expected the shape"),
])
def test_bad_input_raises_a_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
