// Follows TFLite's reference_ops::Softmax<int8_t, int8_t>
// (tensorflow/lite/kernels/internal/reference/softmax.h). activations.cc's SoftmaxEval runs it for
// int8 -> int8 under kReference (the other kernel types use a float lookup table instead), with
// parameters from SoftmaxPrepare<kReference>:
//   PreprocessSoftmaxScaling(beta, input_scale, kScaledDiffIntegerBits = 5) -> input_multiplier,
//   input_left_shift; diff_min = -CalculateInputRadius(5, input_left_shift)
// (see tinylearn::softmax_params). Per row:
//   max = max_c x[c]
//   for every c with diff = x[c] - max >= diff_min:
//     e_c = exp_on_negative_values(Q5.26 value SaturatingRoundingDoublingHighMul(diff *
//           2^input_left_shift, input_multiplier))          -> Q0.31
//     sum += RoundingDivideByPOT(e_c, 12)                    (Rescale to Q12.19)
//   reciprocal of sum (GetReciprocal: normalise, one_over_one_plus_x_for_x_in_0_1)
//   output[c] = clamp(RoundingDivideByPOT(SRDHM(reciprocal, e_c), exponent) - 128), or -128 where
//   diff < diff_min; exponent = num_bits_over_unit + 31 - 8.
// The fixed-point helpers below are gemmlowp's (fixedpoint/fixedpoint.h) written out for int32
// scalars: same constants, same operation order. gemmlowp's plain additions are not saturating;
// they are done here modulo 2^32 (never reached for valid parameters, and free of undefined
// behaviour when a hostile blob could reach them).
//
// Accumulator bound. Each e_c <= 2^31 - 1, so its Q12.19 rescale is <= 2^19; depth <=
// 4095 (TLM_SOFTMAX_MAX_DEPTH) keeps sum <= 4095 * 2^19 < 2^31. The row's maximum contributes
// exactly 2^19, so sum >= 2^19 and the reciprocal's normalisation shift is defined.
// Where TFLite is stricter: it aborts (TFLITE_CHECK(exponent <= 31)) when sum >= 2^28, i.e. 512
// or more entries near the maximum. The exact continuation of its arithmetic, RoundingDivideByPOT
// by 32..34 of a value in [0, 2^31), is 0, so this kernel outputs -128 there.
// The input rescale diff * 2^input_left_shift stays in int32 because the check requires
// -diff_min <= floor(31 * 2^26 / 2^input_left_shift), as TFLite's diff_min is.
#include "softmax_s8.h"

#include "requantize.h"

namespace {

using tlm_detail::rounding_divide_by_pot;
using tlm_detail::saturating_rounding_doubling_high_mul;

// gemmlowp's non-saturating Add / Sub on int32, modulo 2^32.
inline int32_t add(int32_t a, int32_t b) {
  return static_cast<int32_t>(static_cast<uint32_t>(a) + static_cast<uint32_t>(b));
}
inline int32_t sub(int32_t a, int32_t b) {
  return static_cast<int32_t>(static_cast<uint32_t>(a) - static_cast<uint32_t>(b));
}

// gemmlowp SaturatingRoundingMultiplyByPOT<exponent> for exponent > 0: x * 2^exponent,
// saturated to int32.
inline int32_t saturating_shift_left(int32_t x, int exponent) {
  const int64_t v = int64_t{x} * (int64_t{1} << exponent);
  return v > INT32_MAX ? INT32_MAX : v < INT32_MIN ? INT32_MIN : static_cast<int32_t>(v);
}

// gemmlowp RoundingHalfSum: (a + b) / 2 rounded, as (sum + sign) / 2 in 64 bits.
inline int32_t rounding_half_sum(int32_t a, int32_t b) {
  const int64_t sum = int64_t{a} + b;
  return static_cast<int32_t>((sum + (sum >= 0 ? 1 : -1)) / 2);
}

// exp(x) for x in [-1/4, 0), Q0.31 in and out: gemmlowp
// exp_on_interval_between_negative_one_quarter_and_0_excl (Taylor series around -1/8).
int32_t exp_on_interval_between_negative_one_quarter_and_0_excl(int32_t a) {
  const int32_t constant_term = 1895147668;     // exp(-1/8)
  const int32_t constant_1_over_3 = 715827883;  // 1/3
  const int32_t x = add(a, int32_t{1} << 28);   // a + 1/8
  const int32_t x2 = saturating_rounding_doubling_high_mul(x, x);
  const int32_t x3 = saturating_rounding_doubling_high_mul(x2, x);
  const int32_t x4 = saturating_rounding_doubling_high_mul(x2, x2);
  const int32_t x4_over_4 = rounding_divide_by_pot(x4, 2);
  const int32_t x4_over_24_plus_x3_over_6_plus_x2_over_2 = rounding_divide_by_pot(
      add(saturating_rounding_doubling_high_mul(add(x4_over_4, x3), constant_1_over_3), x2), 1);
  return add(constant_term,
             saturating_rounding_doubling_high_mul(
                 constant_term, add(x, x4_over_24_plus_x3_over_6_plus_x2_over_2)));
}

// exp(a) for a <= 0 given in Q5.26 (gemmlowp exp_on_negative_values with 5 integer bits);
// returns Q0.31.
int32_t exp_on_negative_values_q5_26(int32_t a) {
  const int32_t one_quarter = int32_t{1} << 24;  // 1/4 in Q5.26
  const int32_t a_mod_quarter_minus_one_quarter = sub(a & (one_quarter - 1), one_quarter);
  // Rescale<0> of a Q5.26 value: a saturating multiplication by 2^5.
  int32_t result = exp_on_interval_between_negative_one_quarter_and_0_excl(
      saturating_shift_left(a_mod_quarter_minus_one_quarter, 5));
  const int32_t remainder = sub(a_mod_quarter_minus_one_quarter, a);
  // Barrel shifter: multiply by exp(-2^k) for each bit k of the remainder (bit 26 + k in Q5.26).
  static const int32_t kMultipliers[7] = {
      1672461947,  // exp(-1/4)
      1302514674,  // exp(-1/2)
      790015084,   // exp(-1)
      290630308,   // exp(-2)
      39332535,    // exp(-4)
      720401,      // exp(-8)
      242,         // exp(-16)
  };
  for (int k = 0; k < 7; ++k)
    if (remainder & (int32_t{1} << (24 + k)))
      result = saturating_rounding_doubling_high_mul(result, kMultipliers[k]);
  // With 5 integer bits gemmlowp does not clamp below -32 (clampB applies only above 5 bits).
  return a == 0 ? INT32_MAX : result;
}

// 1 / (1 + x) for x in [0, 1), Q0.31 in and out: gemmlowp one_over_one_plus_x_for_x_in_0_1
// (Newton-Raphson with 48/17 - 32/17 * d, three iterations, in Q2.29).
int32_t one_over_one_plus_x_for_x_in_0_1(int32_t a) {
  const int32_t half_denominator = rounding_half_sum(a, INT32_MAX);  // Q0.31
  const int32_t constant_48_over_17 = 1515870810;                   // Q2.29
  const int32_t constant_neg_32_over_17 = -1010580540;              // Q2.29
  int32_t x = add(constant_48_over_17,
                  saturating_rounding_doubling_high_mul(half_denominator, constant_neg_32_over_17));
  const int32_t one_q2_29 = int32_t{1} << 29;
  for (int i = 0; i < 3; ++i) {
    const int32_t half_denominator_times_x =
        saturating_rounding_doubling_high_mul(half_denominator, x);  // Q2.29
    const int32_t one_minus_half_denominator_times_x = sub(one_q2_29, half_denominator_times_x);
    // Q2.29 * Q2.29 = Q4.27, Rescale<2>: a saturating multiplication by 2^2.
    x = add(x, saturating_shift_left(
                   saturating_rounding_doubling_high_mul(x, one_minus_half_denominator_times_x), 2));
  }
  // ExactMulByPot<-1> turns Q2.29 into Q1.30; Rescale<0>: a saturating multiplication by 2.
  return saturating_shift_left(x, 1);
}

// The Q0.31 exponential of entry x with the row maximum `max`, as both passes compute it.
inline int32_t exp_of_diff(const tlm_softmax_params* p, int32_t diff) {
  // MultiplyByQuantizedMultiplierGreaterThanOne(diff, multiplier, left_shift): the check keeps
  // diff * 2^left_shift inside int32 (unsigned arithmetic: left_shift may be 31 with diff = 0).
  const int32_t shifted =
      static_cast<int32_t>(static_cast<uint32_t>(diff) * (uint32_t{1} << p->input_left_shift));
  return exp_on_negative_values_q5_26(
      saturating_rounding_doubling_high_mul(shifted, p->input_multiplier));
}

}  // namespace

tlm_status tlm_softmax_s8_check(const tlm_softmax_params* p, const tlm_softmax_dims* d) {
  if (d->rows < 1 || d->depth < 1) return TLM_ERR_SHAPE;
  if (d->depth > TLM_SOFTMAX_MAX_DEPTH) return TLM_ERR_ACCUMULATOR_RANGE;
  if (p->input_multiplier < 0 || p->input_left_shift < 0 || p->input_left_shift > 31 ||
      p->diff_min > 0)
    return TLM_ERR_BAD_PARAMS;
  // TFLite's CalculateInputRadius(5, left_shift) = floor(31 * 2^26 / 2^left_shift).
  const int64_t radius = (int64_t{31} << 26) >> p->input_left_shift;
  if (-int64_t{p->diff_min} > radius) return TLM_ERR_BAD_PARAMS;
  return TLM_OK;
}

void tlm_softmax_s8(const tlm_softmax_params* p, const tlm_softmax_dims* d, const int8_t* input,
                    int8_t* output) {
  const int32_t depth = d->depth;
  for (int32_t r = 0; r < d->rows; ++r) {
    const int8_t* x = input + r * depth;
    int8_t* y = output + r * depth;
    int32_t max = -128;
    for (int32_t c = 0; c < depth; ++c)
      if (x[c] > max) max = x[c];

    int32_t sum_of_exps = 0;  // Q12.19
    for (int32_t c = 0; c < depth; ++c) {
      const int32_t diff = x[c] - max;
      if (diff >= p->diff_min) sum_of_exps += rounding_divide_by_pot(exp_of_diff(p, diff), 12);
    }

    // GetReciprocal(sum_of_exps, 12): normalise the sum to [1, 2) and invert it.
    const int headroom_plus_one = __builtin_clz(static_cast<uint32_t>(sum_of_exps));
    const int num_bits_over_unit = 12 - headroom_plus_one;
    const int32_t shifted_sum_minus_one = static_cast<int32_t>(
        (static_cast<uint32_t>(sum_of_exps) << headroom_plus_one) - (uint32_t{1} << 31));
    const int32_t shifted_scale = one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one);
    const int exponent = num_bits_over_unit + 31 - 8;

    for (int32_t c = 0; c < depth; ++c) {
      const int32_t diff = x[c] - max;
      int32_t out = -128;
      if (diff >= p->diff_min) {
        const int32_t product = saturating_rounding_doubling_high_mul(shifted_scale,
                                                                      exp_of_diff(p, diff));
        // TFLite aborts for exponent > 31 (see above); the result would be 0 there.
        const int32_t unsat = exponent > 31 ? 0 : rounding_divide_by_pot(product, exponent);
        out = unsat - 128;
        if (out > 127) out = 127;
        if (out < -128) out = -128;
      }
      y[c] = static_cast<int8_t>(out);
    }
  }
}
