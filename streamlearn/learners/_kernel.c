/* streamlearn.learners._kernel: learn a CSR bundle one event at a time.
 *
 * For each event of the bundle, in order: predict with the model as it is,
 * write the prediction (so prequential metrics score predictions made before
 * the event was learned), then learn the event with one optimiser step.
 * The arrays are the learner's own (the ones its ModelState holds); the
 * kernel changes them in place and keeps nothing between calls.
 *
 * The step is exactly LinearModel.learn_many on a batch of that one event:
 *
 *   1. scaler (scale=True): Welford's update of each numeric entry's slot,
 *      then numeric entries standardised with the updated statistics;
 *   2. entries of the same slot summed (hash collisions add up): x_s;
 *   3. normalised optimiser only: a slot whose |x_s| exceeds its largest
 *      value so far has its weights rescaled by old/new, and its largest
 *      value raised;
 *   4. raw outputs z = intercept + sum_s w_s x_s, the loss gradient
 *      g = dloss/dz, clipped to [-clip, clip], times the event's weight h
 *      (the normalised optimiser counts the event as h events in its sums,
 *      as Vowpal Wabbit does: N and T grow by h times the event's, and each
 *      slot's sum of squared gradients by h times its gradient at weight 1);
 *   5. for each distinct slot: gradient g x_s + l2 w_s, one optimiser update;
 *      lazy cumulative L1; with the normalised optimiser's invariant updates
 *      (linear and logistic models), the loss's share of every step is scaled
 *      by the ratio of the move of z under the gradient flow of the event's
 *      loss (integrated over its weight h) to the move of the linear step;
 *   6. intercept -= intercept_lr * g; or, with intercept_lr None
 *      (`intercept_opt`), the intercept learned by the optimiser's own rule
 *      as a feature of value 1 (never penalised; it counts in N).
 *
 * Softmax labels are class columns; `k0` is the number of classes known
 * before the bundle: an event is predicted over the classes seen before it
 * and learned over those plus its own, as learn_one event by event would.
 *
 * A mixture (model MIXTURE, K components) is K binary logistic regressions
 * learned side by side in the K columns, each by the plain normalised rule at
 * its own rate (lr times `mrate[c]`; the largest |x| per slot, N and T are
 * the data's, shared); it answers with their Bayes mixture: each component's
 * probability weighted by exp(-its summed log-loss on the events before),
 * whose log-loss over a stream exceeds the best component's by at most
 * log K.
 *
 * The Python reference of every rule is in tests/test_kernel.py; the tests
 * compare this kernel with it event by event.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { LINEAR = 0, LOGISTIC = 1, SOFTMAX = 2, MIXTURE = 3 };
enum { SGD = 0, ADAGRAD = 1, ADAM = 2, FTRL = 3, NORMALIZED = 4 };

typedef struct {
    int model, opt, K, k0, intercept, scale, invscaling, intercept_opt, invariant;
    double lr, power_t, eps, beta1, beta2, alpha, beta, f_l1, f_l2;
    double l1, l2, intercept_lr, clip;
} Settings;

/* one buffer argument: its data and its number of float64/int64 items */
typedef struct {
    Py_buffer view;
    int held;
} Buf;

static int
get_buf(PyObject *obj, Buf *b, int writable, const char *name, Py_ssize_t itemsize)
{
    b->held = 0;
    if (obj == Py_None) {
        b->view.buf = NULL;
        b->view.len = 0;
        return 0;
    }
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &b->view, flags) < 0) {
        return -1;
    }
    b->held = 1;
    if (b->view.itemsize != itemsize) {
        PyErr_Format(PyExc_TypeError, "_kernel: %s must have items of %zd bytes, got %zd",
                     name, itemsize, b->view.itemsize);
        return -1;
    }
    return 0;
}

static void
release(Buf *bufs, int n)
{
    for (int i = 0; i < n; i++) {
        if (bufs[i].held) {
            PyBuffer_Release(&bufs[i].view);
            bufs[i].held = 0;
        }
    }
}

static inline double
sigmoid(double z)
{
    if (z < -500.0) {
        z = -500.0;
    } else if (z > 500.0) {
        z = 500.0;
    }
    return 1.0 / (1.0 + exp(z * -1.0));
}

static inline double
clip(double g, double c)
{
    if (c < 1e12) {
        g = g < -c ? -c : g;
        g = g > c ? c : g;
    }
    return g;
}

/* softmax of z[0..k) into p (same arithmetic as numpy's: exp(z - max) / sum) */
static void
softmax(const double *z, int k, double *p)
{
    double top = z[0];
    for (int c = 1; c < k; c++) {
        top = z[c] > top ? z[c] : top;
    }
    double sum = 0.0;
    for (int c = 0; c < k; c++) {
        p[c] = exp(z[c] - top);
        sum += p[c];
    }
    for (int c = 0; c < k; c++) {
        p[c] /= sum;
    }
}

/* z[c] = intercept[c] + sum over entries of w[slot, c] * x (c < k) */
static void
raw_entries(const Settings *s, const double *w, const double *b, const int64_t *idx,
            const double *x, Py_ssize_t n, int k, double *z)
{
    int K = s->K;
    if (K == 1) {
        double acc = 0.0;
        for (Py_ssize_t j = 0; j < n; j++) {
            acc += w[idx[j]] * x[j];
        }
        z[0] = acc + b[0];
        return;
    }
    for (int c = 0; c < k; c++) {
        z[c] = 0.0;
    }
    for (Py_ssize_t j = 0; j < n; j++) {
        const double *row = w + idx[j] * K;
        for (int c = 0; c < k; c++) {
            z[c] += row[c] * x[j];
        }
    }
    for (int c = 0; c < k; c++) {
        z[c] += b[c];
    }
}

typedef struct {
    double *w, *b, *a1, *a2, *a3, *l1cum, *l1total, *smean, *svar, *scount, *ib1, *ib2;
    const double *mrate; /* mixture: each component's learning rate over lr (K) */
    double *mloss;       /* mixture: each component's summed log-loss so far (K) */
} Arrays;

/* per-call scratch, sized for the longest row */
typedef struct {
    double *x;      /* entry values (scaled) */
    int64_t *slot;  /* distinct slots */
    double *xs;     /* their summed values */
    double *z, *p;  /* outputs, probabilities (K) */
    double *g1;     /* the loss gradient at weight 1 (K) */
    double *r, *pen; /* invariant updates: each slot's rate and L2 share */
} Scratch;

static inline double
learning_rate(const Settings *s, double t)
{
    if (s->opt == SGD && s->invscaling) {
        return s->lr / pow(t, s->power_t);
    }
    if (s->opt == FTRL) {
        return s->alpha;
    }
    return s->lr;
}

/* one optimiser update of weight *w with gradient g; a, b, c: its accumulators;
 * h, g1: the event's weight and the gradient at weight 1 (the normalised sums') */
static inline void
update(const Settings *s, double *w, double *a, double *bb, double g, double lr_t,
       double bc1, double bc2, double nscale, double smax, double f_l1, double f_l2,
       double h, double g1)
{
    switch (s->opt) {
    case SGD:
        *w -= lr_t * g;
        break;
    case ADAGRAD: {
        double acc = *a + g * g;
        *a = acc;
        *w -= s->lr * g / (sqrt(acc) + s->eps);
        break;
    }
    case ADAM: {
        double m = s->beta1 * *a + (1 - s->beta1) * g;
        double v = s->beta2 * *bb + (1 - s->beta2) * g * g;
        *a = m;
        *bb = v;
        double m_hat = m / bc1;
        double v_hat = v / bc2;
        *w -= s->lr * m_hat / (sqrt(v_hat) + s->eps);
        break;
    }
    case FTRL: {
        double n_old = *bb;
        double n = n_old + g * g;
        double root = sqrt(n);
        double sigma = (root - sqrt(n_old)) / s->alpha;
        double z = *a + g - sigma * *w;
        *a = z;
        *bb = n;
        double mag = fabs(z) - f_l1;
        double shrunk = mag > 0.0 ? (z > 0 ? mag : (z < 0 ? -mag : 0.0)) : 0.0;
        *w = -shrunk / ((s->beta + root) / s->alpha + f_l2);
        break;
    }
    case NORMALIZED: {
        /* a: sum of squared gradients (an event of weight h counts h times);
           smax: the slot's largest |x|; nscale: lr * sqrt(t / N) for this event */
        double acc = *a + h * g1 * g1;
        *a = acc;
        if (acc > 0.0 && smax > 0.0) {
            *w -= nscale * g / (smax * sqrt(acc));
        }
        break;
    }
    }
}

static inline void
apply_l1(double *w, double *cum, double u)
{
    double before = *w, q = *cum, after;
    if (before > 0) {
        after = before - (u + q);
        after = after > 0.0 ? after : 0.0;
    } else if (before < 0) {
        after = before + (u - q);
        after = after < 0.0 ? after : 0.0;
    } else {
        after = before;
    }
    *cum = q + (after - before);
    *w = after;
}

/* The invariant update's scale: the move of z along the gradient flow of the
 * event's loss over its weight h, where z moves at speed X * (-dloss/dz) (X:
 * the sum of rate * x^2 over the features of the step), divided by the move
 * of the plain step, X * h * (-dloss/dz) at the start. In (0, 1]. */
static double
invariant_ratio(int model, double z, double y, double X, double h)
{
    double xh = X * h;
    if (!(xh > 1e-12)) {
        return 1.0;
    }
    if (model == LINEAR) { /* dz/ds = -X (z - y): z - y shrinks by exp(-X h) */
        return -expm1(-xh) / xh;
    }
    /* logistic, label y in {0, 1}: q = +-z moves as dq/ds = X / (1 + e^q), so
       q + e^q grows by X h; solve q + e^q = c by Newton from the plain step */
    double sign = y > 0.5 ? 1.0 : -1.0;
    double q0 = sign * z;
    if (q0 > 30.0) {
        return 1.0; /* a vanishing gradient: both moves are nil */
    }
    double c = q0 + exp(q0) + xh;
    double q = q0 + xh / (1.0 + exp(q0)); /* the plain step: f(q) >= 0 */
    for (int it = 0; it < 100; it++) {
        double e = exp(q);
        double step = (q + e - c) / (1.0 + e);
        q -= step;
        if (fabs(step) <= 1e-15 * (1.0 + fabs(q))) {
            break;
        }
    }
    return (q - q0) * (1.0 + exp(q0)) / xh;
}


/* x[j] = raw[j] standardised by its slot's running mean and variance where the
 * entry is a number (0 where the slot has no spread yet): before predicting,
 * and again after the statistics learned the event. */
static inline void
scale_row(const double *raw, const uint8_t *numeric, const int64_t *idx, Py_ssize_t n,
          const double *mean, const double *var, double *x)
{
    for (Py_ssize_t j = 0; j < n; j++) {
        double v = raw[j];
        if (numeric[j]) {
            double sd = sqrt(var[idx[j]]);
            v = sd > 0 ? (v - mean[idx[j]]) / sd : 0.0;
        }
        x[j] = v;
    }
}

static int
run(const Settings *s, Arrays *A, const int64_t *indptr, Py_ssize_t n_rows,
    const int64_t *indices, const double *values, const uint8_t *numeric,
    const double *labels, const double *weights, double *preds, Py_ssize_t pred_width,
    long long t0, Scratch *S)
{
    int K = s->K;
    int known = s->k0; /* softmax: classes seen so far */
    for (Py_ssize_t i = 0; i < n_rows; i++) {
        Py_ssize_t lo = indptr[i], n = indptr[i + 1] - lo;
        const int64_t *idx = indices + lo;
        const double *raw = values + lo;
        double t = (double)(t0 + i + 1);
        const double h = weights != NULL ? weights[i] : 1.0; /* the event's weight */
        int y_col = s->model == SOFTMAX ? (int)labels[i] : 0;
        int k_pred = s->model == SOFTMAX ? known : (s->model == MIXTURE ? K : 1);
        int k_learn = k_pred;
        if (s->model == SOFTMAX && y_col + 1 > k_learn) {
            k_learn = y_col + 1;
        }
        const double *x = raw; /* the entries' values, standardised with scale */
        if (i + 1 < n_rows) { /* the next event's weights and accumulators, ahead */
            for (Py_ssize_t j = indptr[i + 1]; j < indptr[i + 2]; j++) {
                __builtin_prefetch(A->w + indices[j] * K, 1);
                if (A->a1 != NULL && s->opt != SGD) {
                    __builtin_prefetch(A->a1 + indices[j] * K, 1);
                }
            }
        }

        /* -- predict with the model as it is -- */
        if (s->scale) {
            x = S->x;
            scale_row(raw, numeric + lo, idx, n, A->smean, A->svar, S->x);
        }
        int z_known = 0; /* S->z holds the raw output of this very step */
        if (s->model == MIXTURE) {
            /* every component predicts; the answer is their Bayes mixture, each
               weighted by exp(-its summed log-loss so far); then each adds its
               log-loss on this event (times the event's weight) */
            raw_entries(s, A->w, A->b, idx, x, n, K, S->z);
            double least = A->mloss[0];
            for (int c = 1; c < K; c++) {
                least = A->mloss[c] < least ? A->mloss[c] : least;
            }
            double mass = 0.0, mixed = 0.0;
            for (int c = 0; c < K; c++) {
                double prior = exp(least - A->mloss[c]);
                double zc = S->z[c];
                mass += prior;
                mixed += prior * sigmoid(zc);
                /* log(1 + e^z) - y z, without overflow */
                double loss = fmax(zc, 0.0) + log1p(exp(-fabs(zc))) - labels[i] * zc;
                A->mloss[c] += h * loss;
            }
            if (preds != NULL) {
                preds[i * pred_width] = mixed / mass;
            }
        } else if (preds != NULL) {
            double *out = preds + i * pred_width;
            if (s->model == SOFTMAX) {
                for (int c = 0; c < pred_width; c++) {
                    out[c] = 0.0;
                }
                if (k_pred > 0) {
                    raw_entries(s, A->w, A->b, idx, x, n, k_pred, S->z);
                    softmax(S->z, k_pred, out);
                }
            } else {
                raw_entries(s, A->w, A->b, idx, x, n, 1, S->z);
                out[0] = s->model == LOGISTIC ? sigmoid(S->z[0]) : S->z[0];
                z_known = !s->scale;
            }
        }

        /* -- learn -- */
        if (s->scale) {
            for (Py_ssize_t j = 0; j < n; j++) {
                if (!numeric[lo + j]) {
                    continue;
                }
                int64_t q = idx[j];
                double n_a = A->scount[q], mean_a = A->smean[q];
                double cnt = n_a + 1.0, delta = raw[j] - mean_a;
                A->smean[q] = mean_a + delta / cnt;
                A->svar[q] = (A->svar[q] * n_a + delta * delta * n_a / cnt) / cnt;
                A->scount[q] = cnt;
            }
            scale_row(raw, numeric + lo, idx, n, A->smean, A->svar, S->x);
        }
        /* distinct slots, values of a slot summed in entry order */
        Py_ssize_t m = 0;
        for (Py_ssize_t j = 0; j < n; j++) {
            int64_t q = idx[j];
            Py_ssize_t d = 0;
            while (d < m && S->slot[d] != q) {
                d++;
            }
            if (d == m) {
                S->slot[m] = q;
                S->xs[m] = x[j];
                m++;
            } else {
                S->xs[d] += x[j];
            }
        }
        double nscale = 0.0;
        if (s->opt == NORMALIZED) {
            /* a2: each slot's largest |x|; a3: [N, the events' total weight] */
            double add = 0.0;
            for (Py_ssize_t d = 0; d < m; d++) {
                int64_t q = S->slot[d];
                double ax = fabs(S->xs[d]);
                double old = A->a2[q];
                if (ax > old) {
                    z_known = 0;
                    if (old > 0.0) {
                        double f = old / ax;
                        for (int c = 0; c < K; c++) {
                            A->w[q * K + c] *= f;
                        }
                    }
                    A->a2[q] = ax;
                }
                if (A->a2[q] > 0.0) {
                    double r = S->xs[d] / A->a2[q];
                    add += r * r;
                }
            }
            if (s->intercept && s->intercept_opt) {
                add += 1.0; /* the intercept's feature: 1, of largest value 1 */
            }
            A->a3[0] += h * add;
            A->a3[1] += h;
            nscale = A->a3[0] > 0.0 ? s->lr * sqrt(A->a3[1] / A->a3[0]) : 0.0;
        }
        /* raw outputs from the distinct slots, then the loss gradient */
        double *z = S->z, *g = S->p, *g1 = S->g1;
        if (K == 1 && z_known && m == n) {
            /* no scaler, no rescaling, no slot twice: the sum the prediction
               just made, in the same order */
        } else if (K == 1) {
            double acc = 0.0;
            for (Py_ssize_t d = 0; d < m; d++) {
                acc += A->w[S->slot[d]] * S->xs[d];
            }
            z[0] = acc + A->b[0];
        } else {
            for (int c = 0; c < k_learn; c++) {
                z[c] = 0.0;
            }
            for (Py_ssize_t d = 0; d < m; d++) {
                const double *row = A->w + S->slot[d] * K;
                for (int c = 0; c < k_learn; c++) {
                    z[c] += row[c] * S->xs[d];
                }
            }
            for (int c = 0; c < k_learn; c++) {
                z[c] += A->b[c];
            }
        }
        int kg = 1;
        if (s->model == LINEAR) {
            g[0] = z[0] - labels[i];
        } else if (s->model == LOGISTIC) {
            g[0] = sigmoid(z[0]) - labels[i];
        } else if (s->model == MIXTURE) {
            kg = K; /* each component its own logistic regression */
            for (int c = 0; c < K; c++) {
                g[c] = sigmoid(z[c]) - labels[i];
            }
        } else {
            kg = k_learn;
            softmax(z, kg, g);
            g[y_col] -= 1.0;
        }
        for (int c = 0; c < kg; c++) {
            g1[c] = clip(g[c], s->clip); /* at weight 1 */
            g[c] = g1[c] * h;
        }
        double lr_t = learning_rate(s, t);
        double bc1 = 1.0, bc2 = 1.0;
        if (s->opt == ADAM) {
            bc1 = 1.0 - pow(s->beta1, t);
            bc2 = 1.0 - pow(s->beta2, t);
        }
        double u = 0.0;
        if (s->l1 > 0.0) {
            A->l1total[0] += s->l1 * lr_t;
            u = A->l1total[0];
        }
        if (s->opt == NORMALIZED && s->invariant && (s->model == LINEAR || s->model == LOGISTIC)) {
            /* the rates of this step first (accumulators included), then the
               invariant scale of the loss's share, then the steps */
            double X = 0.0;
            for (Py_ssize_t d = 0; d < m; d++) {
                int64_t q = S->slot[d];
                double xv = S->xs[d], smax = A->a2[q];
                S->pen[d] = s->l2 * A->w[q];
                double gi = g1[0] * xv + S->pen[d];
                double acc = A->a1[q] + h * gi * gi;
                A->a1[q] = acc;
                S->r[d] = acc > 0.0 && smax > 0.0 ? nscale / (smax * sqrt(acc)) : 0.0;
                X += S->r[d] * xv * xv;
            }
            double rb = 0.0;
            if (s->intercept && s->intercept_opt) {
                double acc = A->ib1[0] + h * g1[0] * g1[0];
                A->ib1[0] = acc;
                rb = acc > 0.0 ? nscale / sqrt(acc) : 0.0;
            } else if (s->intercept) {
                rb = s->intercept_lr;
            }
            X += rb;
            double gs = g[0] * invariant_ratio(s->model, z[0], labels[i], X, h);
            for (Py_ssize_t d = 0; d < m; d++) {
                int64_t q = S->slot[d];
                A->w[q] -= S->r[d] * (gs * S->xs[d] + S->pen[d]);
                if (s->l1 > 0.0) {
                    apply_l1(A->w + q, A->l1cum + q, u);
                }
            }
            if (s->intercept) {
                A->b[0] -= rb * gs;
            }
            if (s->model == SOFTMAX && k_learn > known) {
                known = k_learn;
            }
            continue;
        }
        for (Py_ssize_t d = 0; d < m; d++) {
            int64_t q = S->slot[d];
            double xv = S->xs[d];
            double smax = s->opt == NORMALIZED ? A->a2[q] : 0.0;
            for (int c = 0; c < kg; c++) {
                Py_ssize_t at = q * K + c;
                double gi = g[c] * xv, gi1 = g1[c] * xv;
                if (s->l2 > 0.0) {
                    gi += s->l2 * A->w[at];
                    gi1 += s->l2 * A->w[at];
                }
                double ns = s->model == MIXTURE ? nscale * A->mrate[c] : nscale;
                update(s, A->w + at, A->a1 ? A->a1 + at : NULL,
                       (s->opt == ADAM || s->opt == FTRL) ? A->a2 + at : NULL,
                       gi, lr_t, bc1, bc2, ns, smax, s->f_l1, s->f_l2, h, gi1);
                if (s->l1 > 0.0) {
                    apply_l1(A->w + at, A->l1cum + at, u);
                }
            }
        }
        if (s->intercept && s->intercept_opt) {
            for (int c = 0; c < kg; c++) {
                double ns = s->model == MIXTURE ? nscale * A->mrate[c] : nscale;
                update(s, A->b + c, A->ib1 ? A->ib1 + c : NULL,
                       (s->opt == ADAM || s->opt == FTRL) ? A->ib2 + c : NULL, g[c], lr_t,
                       bc1, bc2, ns, 1.0, 0.0, 0.0, h, g1[c]);
            }
        } else if (s->intercept) {
            for (int c = 0; c < kg; c++) {
                A->b[c] -= s->intercept_lr * g[c];
            }
        }
        if (s->model == SOFTMAX && k_learn > known) {
            known = k_learn;
        }
    }
    return 0;
}

/* NULL when indptr/indices form a CSR matrix of n_rows rows, nnz entries and
 * slots below n_slots (and *longest is then its longest row), else the name of
 * the array that does not fit. */
static const char *
check_csr(const int64_t *indptr, const int64_t *indices, Py_ssize_t n_rows, Py_ssize_t nnz,
          Py_ssize_t n_slots, Py_ssize_t *longest)
{
    if (indptr[0] != 0 || indptr[n_rows] != nnz) {
        return "indptr";
    }
    for (Py_ssize_t i = 0; i < n_rows; i++) {
        Py_ssize_t len = indptr[i + 1] - indptr[i];
        if (len < 0) {
            return "indptr";
        }
        *longest = len > *longest ? len : *longest;
    }
    for (Py_ssize_t j = 0; j < nnz; j++) {
        if (indices[j] < 0 || indices[j] >= n_slots) {
            return "indices";
        }
    }
    return NULL;
}

static PyObject *
learn_bundle(PyObject *self, PyObject *args)
{
    (void)self;
    Settings s;
    PyObject *o[21];
    long long t0;
    if (!PyArg_ParseTuple(args, "(iiiiiiiii)(ddddddddddddd)OOOOOOOOOOOOOOOOOOOOOL",
                          &s.model, &s.opt, &s.K, &s.k0, &s.intercept, &s.scale,
                          &s.invscaling, &s.intercept_opt, &s.invariant, &s.lr, &s.power_t, &s.eps, &s.beta1, &s.beta2,
                          &s.alpha, &s.beta, &s.f_l1, &s.f_l2, &s.l1, &s.l2,
                          &s.intercept_lr, &s.clip, &o[0], &o[1], &o[2], &o[3], &o[4], &o[5],
                          &o[6], &o[7], &o[8], &o[9], &o[10], &o[11], &o[12], &o[13], &o[14],
                          &o[15], &o[16], &o[17], &o[18], &o[19], &o[20], &t0)) {
        return NULL;
    }
    if (s.model < LINEAR || s.model > MIXTURE || s.opt < SGD || s.opt > NORMALIZED || s.K < 1
        || (s.model < SOFTMAX && s.K != 1) || s.k0 < 0 || s.k0 > s.K
        || (s.model == MIXTURE
            && (s.K < 2 || s.k0 != s.K || s.opt != NORMALIZED || s.invariant || s.l1 > 0.0))) {
        PyErr_SetString(PyExc_ValueError, "_kernel: inconsistent model settings");
        return NULL;
    }
    static const char *names[21] = {
        "weights", "intercept", "a1", "a2", "a3", "l1.cum", "l1.total", "scaler.mean",
        "scaler.var", "scaler.count", "indptr", "indices", "values", "numeric", "labels",
        "event weights", "predictions", "intercept a1", "intercept a2", "mixture rates",
        "mixture loss"};
    static const int writable[21] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1,
                                     0, 1};
    static const Py_ssize_t itemsize[21] = {8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
                                            8, 8, 8, 1, 8, 8, 8, 8, 8, 8, 8};
    Buf b[21];
    memset(b, 0, sizeof(b));
    for (int k = 0; k < 21; k++) {
        if (get_buf(o[k], &b[k], writable[k], names[k], itemsize[k]) < 0) {
            release(b, 21);
            return NULL;
        }
    }
#define LEN(k) (b[k].view.len / itemsize[k])
#define PTR(k, T) ((T *)b[k].view.buf)
    Py_ssize_t n_slots = LEN(0) / s.K;
    Py_ssize_t n_rows = LEN(10) - 1;
    Py_ssize_t nnz = LEN(11);
    const char *bad = NULL;
    Py_ssize_t per_slot = n_slots * s.K;
    if (LEN(0) != per_slot || LEN(1) != s.K) {
        bad = "weights/intercept";
    } else if (n_rows < 0 || LEN(12) != nnz || (s.scale && LEN(13) != nnz)
               || LEN(14) != n_rows || (b[15].held && LEN(15) != n_rows)) {
        bad = "indptr/indices/values/numeric/labels/event weights";
    } else if ((s.opt == ADAGRAD || s.opt == ADAM || s.opt == FTRL || s.opt == NORMALIZED)
               && LEN(2) != per_slot) {
        bad = "a1";
    } else if ((s.opt == ADAM || s.opt == FTRL) && LEN(3) != per_slot) {
        bad = "a2";
    } else if (s.opt == NORMALIZED && (LEN(3) != n_slots || LEN(4) != 2)) {
        bad = "a2/a3";
    } else if (s.l1 > 0.0 && (LEN(5) != per_slot || LEN(6) != 1)) {
        bad = "l1.cum/l1.total";
    } else if (s.scale && (LEN(7) != n_slots || LEN(8) != n_slots || LEN(9) != n_slots)) {
        bad = "scaler";
    } else if (b[16].held && LEN(16) != n_rows * (s.model == SOFTMAX ? s.K : 1)) {
        bad = "predictions";
    } else if (s.intercept && s.intercept_opt && s.opt != SGD
               && (LEN(17) != s.K || ((s.opt == ADAM || s.opt == FTRL) && LEN(18) != s.K))) {
        bad = "intercept accumulators";
    } else if (s.model == MIXTURE && (LEN(19) != s.K || LEN(20) != s.K)) {
        bad = "mixture rates/loss";
    }
    Py_ssize_t longest = 0;
    if (bad == NULL) {
        bad = check_csr(PTR(10, int64_t), PTR(11, int64_t), n_rows, nnz, n_slots, &longest);
        if (bad == NULL && s.model == SOFTMAX) {
            const double *labels = PTR(14, double);
            for (Py_ssize_t i = 0; i < n_rows; i++) {
                if (!(labels[i] >= 0 && labels[i] < s.K && labels[i] == (int)labels[i])) {
                    bad = "labels";
                    break;
                }
            }
        }
    }
    if (bad != NULL) {
        PyErr_Format(PyExc_ValueError, "_kernel: %s do not fit together", bad);
        release(b, 21);
        return NULL;
    }
    Scratch S;
    size_t cap = (size_t)(longest > 0 ? longest : 1);
    size_t kk = (size_t)s.K;
    S.x = malloc(cap * sizeof(double));
    S.slot = malloc(cap * sizeof(int64_t));
    S.xs = malloc(cap * sizeof(double));
    S.z = malloc(kk * sizeof(double));
    S.p = malloc(kk * sizeof(double));
    S.g1 = malloc(kk * sizeof(double));
    S.r = malloc(cap * sizeof(double));
    S.pen = malloc(cap * sizeof(double));
    if (!S.x || !S.slot || !S.xs || !S.z || !S.p || !S.g1 || !S.r || !S.pen) {
        free(S.x), free(S.slot), free(S.xs), free(S.z), free(S.p), free(S.g1), free(S.r),
            free(S.pen);
        release(b, 21);
        return PyErr_NoMemory();
    }
    Arrays A = {PTR(0, double), PTR(1, double), PTR(2, double), PTR(3, double), PTR(4, double),
                PTR(5, double), PTR(6, double), PTR(7, double), PTR(8, double), PTR(9, double),
                PTR(17, double), PTR(18, double), PTR(19, double), PTR(20, double)};
    Py_BEGIN_ALLOW_THREADS
    run(&s, &A, PTR(10, int64_t), n_rows, PTR(11, int64_t), PTR(12, double),
        PTR(13, uint8_t), PTR(14, double), PTR(15, double), PTR(16, double),
        s.model == SOFTMAX ? s.K : 1, t0, &S);
    Py_END_ALLOW_THREADS
    free(S.x), free(S.slot), free(S.xs), free(S.z), free(S.p), free(S.g1), free(S.r),
        free(S.pen);
    release(b, 21);
#undef LEN
#undef PTR
    Py_RETURN_NONE;
}

/* -- factorization machines ---------------------------------------------------
 *
 * learn_fm_bundle: the same per-event loop for a factorization machine of k
 * factors per slot (Rendle, "Factorization machines", 2010), squared or
 * logistic loss. Over the event's entries j (slot s_j, value x_j):
 *
 *   z = b + sum_j w[s_j] x_j + 1/2 sum_f (S_f^2 - sum_j v[s_j,f]^2 x_j^2),
 *   S_f = sum_j v[s_j,f] x_j
 *
 * (every pair of entries, an entry never with itself). For each distinct
 * slot s, with xs its entries' summed values and x2 the sum of their
 * squares: the linear part's step is the linear kernel's (gradient g xs +
 * l2 w; the optimiser's rule; the normalised optimiser's rescaling and N, T
 * on xs; plain steps); each factor's gradient is
 * g (xs S_f - v[s,f] x2) + factor_l2 v[s,f], with S_f taken before the
 * event's updates, then one step of the factors' optimiser (SGD, AdaGrad or
 * FTRL). The intercept as in the linear kernel. The Python reference is in
 * tests/test_fm.py. */

typedef struct {
    double *w, *b, *a1, *a2, *a3, *v, *fa1, *fa2, *ib1, *ib2;
} FMArrays;

static double
fm_raw(const FMArrays *A, int k, const int64_t *slot, const double *xs, const double *x2,
       Py_ssize_t m, double *S)
{
    double lin = 0.0, pair = 0.0;
    for (Py_ssize_t d = 0; d < m; d++) {
        lin += A->w[slot[d]] * xs[d];
    }
    for (int f = 0; f < k; f++) {
        double sf = 0.0, q = 0.0;
        for (Py_ssize_t d = 0; d < m; d++) {
            double vf = A->v[slot[d] * k + f];
            sf += vf * xs[d];
            q += vf * vf * x2[d];
        }
        S[f] = sf;
        pair += sf * sf - q;
    }
    return A->b[0] + lin + 0.5 * pair;
}

static void
run_fm(const Settings *s, const Settings *fs, int k, double factor_l2, FMArrays *A,
       const int64_t *indptr, Py_ssize_t n_rows, const int64_t *indices, const double *values,
       const double *labels, const double *weights, double *preds, long long t0,
       int64_t *slot, double *xs, double *x2, double *S)
{
    for (Py_ssize_t i = 0; i < n_rows; i++) {
        Py_ssize_t lo = indptr[i], n = indptr[i + 1] - lo;
        const int64_t *idx = indices + lo;
        const double *x = values + lo;
        double t = (double)(t0 + i + 1);
        double h = weights != NULL ? weights[i] : 1.0;
        /* distinct slots: summed values and summed squares, in entry order */
        Py_ssize_t m = 0;
        for (Py_ssize_t j = 0; j < n; j++) {
            Py_ssize_t d = 0;
            while (d < m && slot[d] != idx[j]) {
                d++;
            }
            if (d == m) {
                slot[m] = idx[j];
                xs[m] = x[j];
                x2[m] = x[j] * x[j];
                m++;
            } else {
                xs[d] += x[j];
                x2[d] += x[j] * x[j];
            }
        }
        double z = fm_raw(A, k, slot, xs, x2, m, S);
        if (preds != NULL) {
            preds[i] = s->model == LOGISTIC ? sigmoid(z) : z;
        }
        double nscale = 0.0;
        if (s->opt == NORMALIZED) {
            double add = 0.0;
            int rescaled = 0;
            for (Py_ssize_t d = 0; d < m; d++) {
                int64_t q = slot[d];
                double ax = fabs(xs[d]), old = A->a2[q];
                if (ax > old) {
                    if (old > 0.0) {
                        A->w[q] *= old / ax;
                        rescaled = 1;
                    }
                    A->a2[q] = ax;
                }
                if (A->a2[q] > 0.0) {
                    double r = xs[d] / A->a2[q];
                    add += r * r;
                }
            }
            if (s->intercept && s->intercept_opt) {
                add += 1.0;
            }
            A->a3[0] += h * add;
            A->a3[1] += h;
            nscale = A->a3[0] > 0.0 ? s->lr * sqrt(A->a3[1] / A->a3[0]) : 0.0;
            if (rescaled) {
                z = fm_raw(A, k, slot, xs, x2, m, S);
            }
        }
        double g1 = clip(s->model == LOGISTIC ? sigmoid(z) - labels[i] : z - labels[i],
                         s->clip); /* at weight 1 */
        double g = g1 * h;
        double lr_t = learning_rate(s, t), flr_t = learning_rate(fs, t);
        for (Py_ssize_t d = 0; d < m; d++) {
            int64_t q = slot[d];
            double gi = g * xs[d], gi1 = g1 * xs[d];
            if (s->l2 > 0.0) {
                gi += s->l2 * A->w[q];
                gi1 += s->l2 * A->w[q];
            }
            update(s, A->w + q, A->a1 ? A->a1 + q : NULL,
                   s->opt == FTRL ? A->a2 + q : NULL, gi, lr_t, 1.0, 1.0, nscale,
                   s->opt == NORMALIZED ? A->a2[q] : 0.0, s->f_l1, s->f_l2, h, gi1);
            for (int f = 0; f < k; f++) {
                Py_ssize_t at = q * k + f;
                double vf = A->v[at];
                double gv = g * (xs[d] * S[f] - vf * x2[d]) + factor_l2 * vf;
                update(fs, A->v + at, A->fa1 ? A->fa1 + at : NULL,
                       fs->opt == FTRL ? A->fa2 + at : NULL, gv, flr_t, 1.0, 1.0, 0.0, 0.0,
                       fs->f_l1, fs->f_l2, 1.0, gv);
            }
        }
        if (s->intercept && s->intercept_opt) {
            update(s, A->b, A->ib1, s->opt == FTRL ? A->ib2 : NULL, g, lr_t, 1.0, 1.0, nscale,
                   1.0, 0.0, 0.0, h, g1);
        } else if (s->intercept) {
            A->b[0] -= s->intercept_lr * g;
        }
    }
}

static PyObject *
learn_fm_bundle(PyObject *self, PyObject *args)
{
    (void)self;
    Settings s, fs;
    int k;
    double factor_l2;
    PyObject *o[16];
    long long t0;
    memset(&s, 0, sizeof(s));
    memset(&fs, 0, sizeof(fs));
    if (!PyArg_ParseTuple(args, "(iiiiiiii)(ddddddddddd)(ddddddd)OOOOOOOOOOOOOOOOL",
                          &s.model, &s.opt, &fs.opt, &k, &s.intercept, &s.intercept_opt,
                          &s.invscaling, &fs.invscaling,
                          &s.lr, &s.power_t, &s.eps, &s.alpha, &s.beta, &s.f_l1, &s.f_l2,
                          &s.l2, &s.intercept_lr, &s.clip, &factor_l2,
                          &fs.lr, &fs.power_t, &fs.eps, &fs.alpha, &fs.beta, &fs.f_l1, &fs.f_l2,
                          &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6], &o[7], &o[8], &o[9],
                          &o[10], &o[11], &o[12], &o[13], &o[14], &o[15], &t0)) {
        return NULL;
    }
    fs.model = s.model;
    s.K = fs.K = 1;
    if ((s.model != LINEAR && s.model != LOGISTIC) || k < 1
        || (s.opt != SGD && s.opt != ADAGRAD && s.opt != FTRL && s.opt != NORMALIZED)
        || (fs.opt != SGD && fs.opt != ADAGRAD && fs.opt != FTRL)) {
        PyErr_SetString(PyExc_ValueError, "_kernel: inconsistent factorization machine settings");
        return NULL;
    }
    static const char *names[16] = {
        "weights", "intercept", "a1", "a2", "a3", "factors", "factor a1", "factor a2",
        "indptr", "indices", "values", "labels", "event weights", "predictions",
        "intercept a1", "intercept a2"};
    static const int writable[16] = {1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1};
    Buf b[16];
    memset(b, 0, sizeof(b));
    for (int q = 0; q < 16; q++) {
        if (get_buf(o[q], &b[q], writable[q], names[q], 8) < 0) {
            release(b, 16);
            return NULL;
        }
    }
#define LEN(q) (b[q].view.len / 8)
#define PTR(q, T) ((T *)b[q].view.buf)
    Py_ssize_t n_slots = LEN(0), n_rows = LEN(8) - 1, nnz = LEN(9);
    Py_ssize_t per_factor = n_slots * k;
    const char *bad = NULL;
    if (LEN(1) != 1 || LEN(5) != per_factor) {
        bad = "weights/intercept/factors";
    } else if (n_rows < 0 || LEN(10) != nnz || LEN(11) != n_rows
               || (b[12].held && LEN(12) != n_rows) || (b[13].held && LEN(13) != n_rows)) {
        bad = "indptr/indices/values/labels/event weights/predictions";
    } else if ((s.opt != SGD && LEN(2) != n_slots) || (s.opt == FTRL && LEN(3) != n_slots)
               || (s.opt == NORMALIZED && (LEN(3) != n_slots || LEN(4) != 2))) {
        bad = "a1/a2/a3";
    } else if ((fs.opt != SGD && LEN(6) != per_factor) || (fs.opt == FTRL && LEN(7) != per_factor)) {
        bad = "factor a1/a2";
    } else if (s.intercept && s.intercept_opt && s.opt != SGD
               && (LEN(14) != 1 || (s.opt == FTRL && LEN(15) != 1))) {
        bad = "intercept accumulators";
    }
    Py_ssize_t longest = 0;
    if (bad == NULL) {
        bad = check_csr(PTR(8, int64_t), PTR(9, int64_t), n_rows, nnz, n_slots, &longest);
    }
    if (bad != NULL) {
        PyErr_Format(PyExc_ValueError, "_kernel: %s do not fit together", bad);
        release(b, 16);
        return NULL;
    }
    size_t cap = (size_t)(longest > 0 ? longest : 1);
    int64_t *slot = malloc(cap * sizeof(int64_t));
    double *xs = malloc(cap * sizeof(double)), *x2 = malloc(cap * sizeof(double));
    double *S = malloc((size_t)k * sizeof(double));
    if (!slot || !xs || !x2 || !S) {
        free(slot), free(xs), free(x2), free(S);
        release(b, 16);
        return PyErr_NoMemory();
    }
    FMArrays A = {PTR(0, double), PTR(1, double), PTR(2, double), PTR(3, double),
                  PTR(4, double), PTR(5, double), PTR(6, double), PTR(7, double),
                  PTR(14, double), PTR(15, double)};
    Py_BEGIN_ALLOW_THREADS
    run_fm(&s, &fs, k, factor_l2, &A, PTR(8, int64_t), n_rows, PTR(9, int64_t),
           PTR(10, double), PTR(11, double), PTR(12, double), PTR(13, double), t0, slot, xs, x2,
           S);
    Py_END_ALLOW_THREADS
    free(slot), free(xs), free(x2), free(S);
    release(b, 16);
#undef LEN
#undef PTR
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"learn_bundle", learn_bundle, METH_VARARGS,
     "learn_bundle(ints, floats, 10 state arrays, indptr, indices, values, numeric, labels, "
     "event_weights, predictions, 2 intercept accumulators, t0): predict then learn each event of a CSR bundle, in "
     "order, in place (see streamlearn.learners.event)."},
    {"learn_fm_bundle", learn_fm_bundle, METH_VARARGS,
     "learn_fm_bundle(ints, floats, factor floats, 8 state arrays, indptr, indices, values, "
     "labels, event_weights, predictions, 2 intercept accumulators, t0): predict then "
     "learn each event of a CSR bundle with a factorization machine, in order, in place."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "streamlearn.learners._kernel",
                                    "Per-event learning of CSR bundles (see _kernel.c).", -1,
                                    methods};

PyMODINIT_FUNC
PyInit__kernel(void)
{
    return PyModule_Create(&module);
}
