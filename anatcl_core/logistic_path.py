"""Exact class-weighted L2 logistic regressions along a path of C values, many training sets at once.

Each problem is scikit-learn's binary `LogisticRegression(C=C, class_weight=...)` (L2 penalty, unpenalised
intercept) solved to its optimum: with labels y_i in {0, 1} and sample weights s_i (the class weights),

    minimise over w [d], b:   sum_i s_i * (log(1 + exp(f_i)) - y_i f_i) + ||w||^2 / (2 C),   f = Z w + b.

lbfgs at its default tol (1e-4) stops short of this optimum; Newton's method run to convergence does not, so
the reference for this module is an exact solver (scikit-learn's newton-cholesky at tol 1e-12), not lbfgs.

How: Newton's method in function space (Rasmussen & Williams, GPML algorithm 3.1, with the intercept kept out
of the penalty). The optimum's weights lie in the span of the training rows, w = Z^T a, so the margins are
f = K a + b with K = Z Z^T, and a Newton step needs one solve with B = I + C W^1/2 K W^1/2 [n, n]
(W = diag(s p (1 - p)), the loss curvature). `KernelSystem` factors B itself (cheaper while n^3 / 3 <
n d^2 + d^3 / 3); `FeatureSystem` factors the d x d matrix I + C Z^T W Z of the Woodbury identity instead.
Once the steps are small the last factor is kept (a Newton step with that older curvature, still a descent
direction), which saves most factorisations of the final iterations. The C values of a problem are solved in
increasing order, each started from the previous optimum moved along the tangent of the solution path.
Training sets of different sizes are padded with zero-weight rows, which leave the solution unchanged.

Example::

    coef, intercept = logistic_path(Z, y, s, Cs)   # Z [J, n, d], y [J, n], s [J, n], Cs [J, K]
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy.linalg.lapack import dpotrf, dpotrs
from scipy.special import expit

#: Newton stops once a step moves no margin by more than this: the margins are then within ~1e-10 of the
#: optimum's (much closer after a fresh Newton step, which converges quadratically).
STEP_TOL = 1e-8
MAX_ITER = 100
#: Steps with an older curvature are kept while each shrinks the last at least this much.
CONTRACTION = 0.25


def _cholesky(A: np.ndarray) -> np.ndarray:
    """Cholesky factor of a symmetric positive definite A [m, m], in place (LAPACK, as dpotrs reads it)."""
    factor, info = dpotrf(A.T, lower=0, overwrite_a=1, clean=0)      # A.T: the same memory in Fortran order
    if info != 0:
        raise np.linalg.LinAlgError(f"matrix not positive definite (LAPACK dpotrf info {info})")
    return factor


class KernelSystem:
    """Solves with B = I + C W^1/2 K W^1/2 through the kernel K = Z Z^T [J, n, n], one factor per problem."""

    #: the curvature is renewed after a step that moved some margin by more than this
    refactor_step = 0.1

    def __init__(self, Z: np.ndarray):
        self.K = Z @ Z.transpose(0, 2, 1)
        self._no_factors(Z)

    def _no_factors(self, Z: np.ndarray) -> None:
        self.factors: list = [None] * len(Z)
        self.sw, self.C = np.zeros(Z.shape[:2]), np.zeros(len(Z))   # curvature roots and C of each factor

    def matvec(self, v: np.ndarray, which: np.ndarray | None = None) -> np.ndarray:
        """K v: [J, n] -> [J, n], for the problems `which` only (zeros elsewhere) when given."""
        if which is None or len(which) == len(v):
            return (self.K @ v[..., None])[..., 0]
        out = np.zeros_like(v)
        for j in which:                              # a loop: K[which] would copy the kernels
            out[j] = self.K[j] @ v[j]
        return out

    def update(self, active: np.ndarray, renew: np.ndarray, sw: np.ndarray, C: np.ndarray) -> None:
        """New factors for the `active` problems whose C changed or whose curvature is to be renewed (`renew` [J]),
        at curvature roots sw [J, n] and C [J]; the others keep theirs (an older curvature)."""
        for j in active[renew[active] | (self.C[active] != C[active])]:
            root = np.sqrt(C[j]) * sw[j]
            B = np.multiply(self.K[j], root[:, None])            # formed and factored while in cache
            B *= root
            self._factor(j, B, C[j])
            self.sw[j] = sw[j]

    def _factor(self, j: int, A: np.ndarray, C: float) -> None:
        """Problem j's factor: the Cholesky factor of I + A [m, m], computed in A's memory."""
        A.flat[::len(A) + 1] += 1.0
        self.factors[j], self.C[j] = _cholesky(A), C

    def solve(self, which: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        """B^-1 rhs for the problems `which`: rhs [len(which), m, n] -> [len(which), m, n]."""
        return np.stack([dpotrs(self.factors[j], part.T, lower=0)[0].T for j, part in zip(which, rhs)])


class FeatureSystem(KernelSystem):
    """The same solves through Z [J, n, d] and the Woodbury identity, with the d x d Gram G = Z^T W Z of each
    problem kept: a new C costs a d x d Cholesky factor of I + C G, a new curvature the n d^2 Gram as well,
    so the curvature is renewed only after larger steps than `KernelSystem`'s."""

    refactor_step = 1.0

    def __init__(self, Z: np.ndarray):
        self.Z, self.Y = Z, np.zeros_like(Z)                        # Y = W^1/2 Z at each problem's factor
        self.G = np.zeros((len(Z), Z.shape[2], Z.shape[2]))
        self._no_factors(Z)

    def matvec(self, v: np.ndarray, which: np.ndarray | None = None) -> np.ndarray:
        out = np.zeros_like(v)
        for j in range(len(v)) if which is None else which:
            out[j] = self.Z[j] @ (v[j] @ self.Z[j])
        return out

    def update(self, active: np.ndarray, renew: np.ndarray, sw: np.ndarray, C: np.ndarray) -> None:
        for j in active[renew[active] | (self.C[active] == 0)]:
            np.multiply(self.Z[j], sw[j, :, None], out=self.Y[j])
            self.G[j] = self.Y[j].T @ self.Y[j]
            self.sw[j], self.C[j] = sw[j], np.nan                    # its factor is renewed below
        for j in active[self.C[active] != C[active]]:
            self._factor(j, C[j] * self.G[j], C[j])

    def solve(self, which: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        # B^-1 = I - C Y (I + C Y^T Y)^-1 Y^T, problem by problem (a few large ones: no copies of Y)
        inner = super().solve(which, np.stack([part @ self.Y[j] for j, part in zip(which, rhs)]))
        return rhs - np.stack([self.C[j] * part @ self.Y[j].T for j, part in zip(which, inner)])


def _system(Z: np.ndarray) -> KernelSystem:
    n, d = Z.shape[1:]
    return KernelSystem(Z) if n ** 3 / 3 <= n * d * d + d ** 3 / 3 else FeatureSystem(Z)


def _loss(f: np.ndarray, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    return (s * (np.logaddexp(0.0, f) - y * f)).sum(axis=-1)


def _direction(system: KernelSystem, which: np.ndarray, C: np.ndarray, v: np.ndarray, Kv: np.ndarray,
               constraint: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve one step's linear system for the problems `which` with their current factors: (da [J, n], db [J]).

    With sw the factor's curvature roots and u the change of the margins, (I + C K W) u = K v + db 1 and
    1^T W u = constraint; then da = v - C W u. A Newton step takes v = -(C r + a), constraint = -sum(r); the
    path's tangent d(a, b)/d(log C) takes v = a, constraint = 0. Problems not in `which` get zeros.
    """
    sw = system.sw[which]
    x = system.solve(which, np.stack([sw * Kv[which], sw], axis=1))
    x0, x1 = x[:, 0], x[:, 1]
    da, db = np.zeros_like(v), np.zeros(len(C))
    db[which] = (constraint[which] - (sw * x0).sum(-1)) / (sw * x1).sum(-1)
    da[which] = v[which] - C[which, None] * sw * (x0 + db[which, None] * x1)
    return da, db


def _newton(system, y, s, C, a, b, g, tol, max_iter):
    """Newton with backtracking from (a, b) for each problem; g = K a. Returns the optimum's a, b, g."""
    J = len(C)
    done, last_step, before = np.zeros(J, bool), np.zeros(J), np.full(J, np.inf)
    for _ in range(max_iter):
        f = g + b[:, None]
        p = expit(f)
        r = s * (p - y)
        sw = np.sqrt(s * p * (1.0 - p))
        v = -(C[:, None] * r + a)
        active = np.flatnonzero(~done)
        # renew the curvature after a large step or a poor contraction (a new C always renews the factor)
        system.update(active, (last_step > system.refactor_step) | (last_step > CONTRACTION * before), sw, C)
        da, db = _direction(system, active, C, v, system.matvec(v, active), -r.sum(-1))
        Kda = system.matvec(da, active)
        slope = ((r + a / C[:, None]) * Kda).sum(-1) + r.sum(-1) * db       # directional derivative, < 0
        start = _loss(f, y, s) + (a * g).sum(-1) / (2 * C)
        t = np.where(done, 0.0, 1.0)
        # backtracking (Armijo); a full step is always taken once the predicted decrease is below rounding
        tiny = -slope <= 1e-12 * s.sum(-1)
        for _ in range(60):
            a_t, g_t = a + t[:, None] * da, g + t[:, None] * Kda
            value = _loss(g_t + (b + t * db)[:, None], y, s) + (a_t * g_t).sum(-1) / (2 * C)
            short = (value > start + 1e-4 * t * slope) & ~tiny & ~done
            if not short.any():
                break
            t = np.where(short, t / 2, t)
        a, g, b = a + t[:, None] * da, g + t[:, None] * Kda, b + t * db
        step = np.abs(Kda + db[:, None]).max(-1)
        before, last_step = last_step, np.where(t == 1.0, step, np.inf)
        done |= (t == 1.0) & (step <= tol)
        if done.all():
            return a, b, g
    warnings.warn(f"Newton did not converge in {max_iter} iterations for {np.sum(~done)} problem(s)",
                  RuntimeWarning, stacklevel=3)
    return a, b, g


def logistic_path(Z: np.ndarray, y: np.ndarray, s: np.ndarray, Cs: np.ndarray, *, tol: float = STEP_TOL,
                  max_iter: int = MAX_ITER) -> tuple[np.ndarray, np.ndarray]:
    """Optimal (coef [J, K, d], intercept [J, K]) of J problems at K values of C each.

    Z: [J, n, d] float64 training rows, zero rows for padding; y: [J, n] 0/1 labels; s: [J, n] sample
    weights, 0 on padding rows (each problem needs positive weight on both labels); Cs: [J, K], increasing
    along each row. Each problem is solved on its own (the batch shares loops, not results).
    """
    Z, y, s, Cs = (np.asarray(v, dtype=np.float64) for v in (Z, y, s, Cs))
    if np.any((s * y).sum(-1) <= 0) or np.any((s * (1 - y)).sum(-1) <= 0):
        raise ValueError("every problem needs rows of both classes with positive weight")
    system = _system(Z)
    J, n = y.shape
    a, g = np.zeros((J, n)), np.zeros((J, n))
    b = np.log((s * y).sum(-1) / (s * (1 - y)).sum(-1))               # the optimum at w = 0
    coef, intercept = np.empty((J, Cs.shape[1], Z.shape[2])), np.empty((J, Cs.shape[1]))
    for k in range(Cs.shape[1]):
        if k:                                        # predictor: the path's tangent in log C, last factors
            step = np.log(Cs[:, k] / Cs[:, k - 1])
            da, db = _direction(system, np.arange(J), Cs[:, k - 1], a, g, np.zeros(J))
            a, b = a + step[:, None] * da, b + step * db
            g = system.matvec(a)
        a, b, g = _newton(system, y, s, Cs[:, k], a, b, g, tol, max_iter)
        coef[:, k] = (Z.transpose(0, 2, 1) @ a[..., None])[..., 0]
        intercept[:, k] = b
    return coef, intercept
