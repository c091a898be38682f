#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "tinylearn/train/model.h"

namespace tinylearn {

namespace {
void check_lr(float lr) {
  if (!(lr > 0.0f) || !std::isfinite(lr))
    throw std::invalid_argument("learning_rate must be a positive finite number, got " +
                                std::to_string(lr));
}
// One state vector per parameter, created (zeroed) on first use.
void ensure_state(std::vector<std::vector<float>>& state, const std::vector<Param>& params) {
  if (state.size() == params.size()) return;
  state.clear();
  for (const Param& p : params) state.emplace_back(p.size, 0.0f);
}
}  // namespace

SGD::SGD(float lr, float momentum_, bool nesterov_)
    : Optimizer(lr), momentum(momentum_), nesterov(nesterov_) {
  check_lr(lr);
  if (!(momentum >= 0.0f && momentum < 1.0f))
    throw std::invalid_argument("SGD: momentum must be in [0, 1), got " + std::to_string(momentum));
}

std::vector<std::vector<float>*> SGD::slots() {
  std::vector<std::vector<float>*> r;
  for (auto& v : velocity_) r.push_back(&v);
  return r;
}

std::vector<std::vector<float>*> Adam::slots() {
  std::vector<std::vector<float>*> r;
  for (auto& v : m_) r.push_back(&v);
  for (auto& v : v_) r.push_back(&v);
  return r;
}

void SGD::prepare(const std::vector<Param>& params) {
  if (momentum != 0.0f) ensure_state(velocity_, params);
}

void Adam::prepare(const std::vector<Param>& params) {
  ensure_state(m_, params);
  ensure_state(v_, params);
}

void SGD::step(std::vector<Param>& params) {
  apply_schedule();
  ++iterations;
  if (momentum == 0.0f) {
    for (Param& p : params)
      for (std::size_t i = 0; i < p.size; ++i) p.value[i] -= learning_rate * p.grad[i];
    return;
  }
  ensure_state(velocity_, params);
  // Keras: v = momentum * v - lr * g; w += v (plain) or w += momentum * v - lr * g (Nesterov).
  for (std::size_t k = 0; k < params.size(); ++k) {
    Param& p = params[k];
    float* v = velocity_[k].data();
    for (std::size_t i = 0; i < p.size; ++i) {
      v[i] = momentum * v[i] - learning_rate * p.grad[i];
      p.value[i] += nesterov ? momentum * v[i] - learning_rate * p.grad[i] : v[i];
    }
  }
}

void Optimizer::apply_schedule() {
  const double step = double(iterations);
  switch (schedule.kind) {
    case Schedule::None: return;
    case Schedule::ExponentialDecay: {
      double p = step / double(schedule.steps);
      if (schedule.staircase) p = std::floor(p);
      learning_rate = float(double(schedule.initial) * std::pow(double(schedule.rate), p));
      return;
    }
    case Schedule::CosineDecay: {
      const double p = std::min(step, double(schedule.steps)) / double(schedule.steps);
      const double cosine = 0.5 * (1.0 + std::cos(3.141592653589793 * p));
      learning_rate = float(double(schedule.initial) * ((1.0 - schedule.rate) * cosine + schedule.rate));
      return;
    }
  }
}

Adam::Adam(float lr, float b1, float b2, float eps, float wd)
    : Optimizer(lr), weight_decay(wd), beta_1(b1), beta_2(b2), epsilon(eps) {
  check_lr(lr);
  if (!(b1 >= 0.0f && b1 < 1.0f) || !(b2 >= 0.0f && b2 < 1.0f) || !(eps > 0.0f))
    throw std::invalid_argument("Adam: expected 0 <= beta_1, beta_2 < 1 and epsilon > 0");
  if (!(wd >= 0.0f) || !std::isfinite(wd))
    throw std::invalid_argument("AdamW: weight_decay must be >= 0, got " + std::to_string(wd));
}

void Adam::step(std::vector<Param>& params) {
  ensure_state(m_, params);
  ensure_state(v_, params);
  apply_schedule();
  if (weight_decay > 0.0f)
    for (Param& p : params)
      for (std::size_t i = 0; i < p.size; ++i) p.value[i] -= p.value[i] * weight_decay * learning_rate;
  ++iterations;
  const double t = double(iterations);
  const float alpha = float(double(learning_rate) * std::sqrt(1.0 - std::pow(double(beta_2), t)) /
                            (1.0 - std::pow(double(beta_1), t)));
  for (std::size_t k = 0; k < params.size(); ++k) {
    Param& p = params[k];
    float* m = m_[k].data();
    float* v = v_[k].data();
    for (std::size_t i = 0; i < p.size; ++i) {
      const float g = p.grad[i];
      m[i] += (g - m[i]) * (1.0f - beta_1);
      v[i] += (g * g - v[i]) * (1.0f - beta_2);
      p.value[i] -= alpha * m[i] / (std::sqrt(v[i]) + epsilon);
    }
  }
}

RMSprop::RMSprop(float lr, float rho_, float momentum_, float epsilon_, bool centered_)
    : Optimizer(lr), rho(rho_), momentum(momentum_), epsilon(epsilon_), centered(centered_) {
  check_lr(lr);
  if (!(rho >= 0.0f && rho < 1.0f) || !(momentum >= 0.0f && momentum < 1.0f) || !(epsilon > 0.0f))
    throw std::invalid_argument("RMSprop: expected 0 <= rho < 1, 0 <= momentum < 1 and epsilon > 0");
}

std::vector<std::vector<float>*> RMSprop::slots() {
  std::vector<std::vector<float>*> r;
  for (auto* group : {&velocity_, &momentum_, &average_})
    for (auto& v : *group) r.push_back(&v);
  return r;
}

void RMSprop::prepare(const std::vector<Param>& params) {
  ensure_state(velocity_, params);
  if (momentum > 0.0f) ensure_state(momentum_, params);
  if (centered) ensure_state(average_, params);
}

void RMSprop::step(std::vector<Param>& params) {
  prepare(params);
  apply_schedule();
  ++iterations;
  const float lr = learning_rate, r = rho, one_minus = 1.0f - rho;
  for (std::size_t k = 0; k < params.size(); ++k) {
    Param& p = params[k];
    float* v = velocity_[k].data();
    float* m = momentum > 0.0f ? momentum_[k].data() : nullptr;
    float* a = centered ? average_[k].data() : nullptr;
    for (std::size_t i = 0; i < p.size; ++i) {
      const float g = p.grad[i];
      v[i] = r * v[i] + one_minus * (g * g);
      float denominator = v[i];
      if (a) {
        a[i] = r * a[i] + one_minus * g;
        denominator -= a[i] * a[i];
      }
      const float increment = lr * g / std::sqrt(denominator + epsilon);
      if (m) {
        m[i] = momentum * m[i] + increment;
        p.value[i] -= m[i];
      } else {
        p.value[i] -= increment;
      }
    }
  }
}

}  // namespace tinylearn
