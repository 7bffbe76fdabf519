/* See icl_math.h. Range reduction plus a short series; no tables, no libc. */
#include "icl_math.h"

#include <stdint.h>

/* Nearest integer (ties to even) of |x| < 2^51: adding and subtracting 1.5 * 2^52 leaves no
   fraction bits, so the addition rounds. Needs no libm and no FMA contraction. */
static double nearest(double x) { return (x + 0x1.8p52) - 0x1.8p52; }

float icl_exp_f32(float x) {
    if (x != x) return x;
    icl_v4f v = {x, x, x, x};
    return icl_exp4(v)[0];
}

double icl_exp(double x) {
    if (x > 709.78) return icl_f64_of(0x7ff0000000000000ull);
    if (x < -708.39) return 0.0; /* rope tables never get near: subnormals are not needed */
    const double LOG2E = 1.4426950408889634, LN2_HI = 6.93147180369123816490e-01, LN2_LO = 1.90821492927058770002e-10;
    double kd = nearest(x * LOG2E);
    double r = (x - kd * LN2_HI) - kd * LN2_LO;
    /* Horner form of the Taylor series to r^14 (remainder below 1e-18 on |r| <= 0.347) */
    double p = 1.0;
    for (int n = 14; n >= 1; n--) p = 1.0 + p * r / n;
    if (kd > 1023) return p * 2.0 * icl_f64_of((uint64_t)((int64_t)kd + 1022) << 52);
    return p * icl_f64_of((uint64_t)((int64_t)kd + 1023) << 52);
}

double icl_log(double x) {
    /* x = m 2^e with m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172 */
    uint64_t bits = icl_f64_bits(x);
    int e = (int)((bits >> 52) & 0x7ff) - 1023;
    double m = icl_f64_of((bits & 0x000fffffffffffffull) | 0x3ff0000000000000ull);
    if (m > 1.4142135623730951) {
        m *= 0.5;
        e += 1;
    }
    double s = (m - 1.0) / (m + 1.0), s2 = s * s, term = s, sum = 0.0;
    for (int n = 1; n <= 27; n += 2) { /* s^29 / 29 < 1e-23 */
        sum += term / n;
        term *= s2;
    }
    const double LN2 = 0.6931471805599453;
    return 2.0 * sum + e * LN2;
}

/* sin and cos of r for |r| <= pi/4 + a little: Taylor to r^21 / r^20 (remainder below 1e-19). */
static double sin_small(double r) {
    double r2 = r * r, p = 1.0;
    for (int n = 21; n >= 3; n -= 2) p = 1.0 - p * r2 / (n * (n - 1));
    return r * p;
}

static double cos_small(double r) {
    double r2 = r * r, p = 1.0;
    for (int n = 20; n >= 2; n -= 2) p = 1.0 - p * r2 / (n * (n - 1));
    return p;
}

/* x = k pi/2 + r, with pi/2 split into three parts of 33 significant bits so that k * part is
   exact for |k| < 2^20 (the digits of pi/2, as in every Cody-Waite reduction). */
static double reduce(double x, int *quadrant) {
    const double TWO_OVER_PI = 6.36619772367581382433e-01;
    const double P1 = 1.57079632673412561417e+00, P2 = 6.07710050630396597660e-11, P3 = 2.02226624871116645580e-21;
    double kd = nearest(x * TWO_OVER_PI);
    *quadrant = (int)((int64_t)kd & 3);
    return ((x - kd * P1) - kd * P2) - kd * P3;
}

double icl_sin(double x) {
    int q;
    double r = reduce(x, &q);
    switch (q) {
    case 0: return sin_small(r);
    case 1: return cos_small(r);
    case 2: return -sin_small(r);
    default: return -cos_small(r);
    }
}

double icl_cos(double x) {
    int q;
    double r = reduce(x, &q);
    switch (q) {
    case 0: return cos_small(r);
    case 1: return -sin_small(r);
    case 2: return -cos_small(r);
    default: return sin_small(r);
    }
}
