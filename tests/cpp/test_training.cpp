// Training in C++ only: convergence on a sine, determinism, input validation, early stopping.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>

#include "tinylearn/train/model.h"

namespace {

using namespace tinylearn;

constexpr float kTwoPi = 6.28318530717958647692f;

// x ~ U[0, 2 pi), y = sin x + U(-noise, noise), from tinylearn::Random.
void sine_data(std::uint64_t seed, std::size_t n, float noise, Matrix& x, Matrix& y) {
  Random rng(seed);
  x = Matrix({n, 1});
  y = Matrix({n, 1});
  for (std::size_t i = 0; i < n; ++i) {
    x(i, 0) = rng.uniform(0.0f, kTwoPi);
    y(i, 0) = float(std::sin(double(x(i, 0)))) + rng.uniform(-noise, noise);
  }
}

std::unique_ptr<Sequential> sine_model(std::uint64_t build_seed, float lr) {
  auto m = std::make_unique<Sequential>();
  m->add(std::make_unique<Dense>(16, Activation::ReLU));
  m->add(std::make_unique<Dense>(16, Activation::ReLU));
  m->add(std::make_unique<Dense>(1));
  m->build(1, build_seed);
  m->compile(std::make_unique<Adam>(lr), Loss::MSE, {Metric::MAE});
  return m;
}

std::vector<float> all_weights(Sequential& m) {
  std::vector<float> w;
  for (std::size_t l = 0; l < m.size(); ++l) {
    auto& d = dynamic_cast<Dense&>(m.layer(l));
    w.insert(w.end(), d.kernel.begin(), d.kernel.end());
    w.insert(w.end(), d.bias.begin(), d.bias.end());
  }
  return w;
}

bool bit_identical(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("Sequential 1-16-16-1 with Adam learns sin(x) on 0..2pi with test MSE < 0.02") {
  Matrix x, y, xt_, yt;
  sine_data(1, 1000, 0.05f, x, y);
  sine_data(2, 400, 0.0f, xt_, yt);  // noiseless test set
  auto m = sine_model(1, 0.01f);
  CHECK(m->param_count() == 2u * 16 + 16 * 17 + 17);
  FitOptions opt;
  opt.epochs = 300;
  opt.batch_size = 64;
  opt.seed = 1;
  const Tensor xv = xt_, yv = yt;
  const History h = m->fit(x, y, opt, &xv, &yv);
  CHECK(h.epochs_run == 300);
  CHECK_FALSE(h.stopped);
  REQUIRE(h.history.at("loss").size() == 300);
  REQUIRE(h.history.at("val_loss").size() == 300);
  REQUIRE(h.history.at("mae").size() == 300);
  REQUIRE(h.history.at("val_mae").size() == 300);

  // Test MSE computed here, in double, from predict (not from the library's metrics).
  const Matrix pred = m->predict(xt_);
  double mse = 0.0;
  for (std::size_t i = 0; i < pred.shape()[0]; ++i) {
    const double e = double(pred(i, 0)) - std::sin(double(xt_(i, 0)));
    mse += e * e;
  }
  mse /= double(pred.shape()[0]);
  MESSAGE("sine test MSE after 300 epochs: " << mse);
  CHECK(mse < 0.02);
  CHECK(std::fabs(h.history.at("val_loss").back() - mse) < 1e-4 + 1e-3 * mse);
  // The variance of sin on a full period is 0.5: the model must beat a constant by far.
  CHECK(h.history.at("loss").back() < h.history.at("loss").front());
}

TEST_CASE("Training is deterministic: same seeds give bit-identical weights, other seeds differ") {
  Matrix x, y;
  sine_data(3, 300, 0.05f, x, y);
  auto train = [&](std::uint64_t build_seed, std::uint64_t fit_seed) {
    auto m = sine_model(build_seed, 0.01f);
    FitOptions opt;
    opt.epochs = 5;
    opt.batch_size = 32;
    opt.seed = fit_seed;
    m->fit(x, y, opt);
    return all_weights(*m);
  };
  const std::vector<float> a = train(5, 9), b = train(5, 9);
  CHECK(bit_identical(a, b));
  CHECK_FALSE(bit_identical(a, train(6, 9)));  // other initial weights
  CHECK_FALSE(bit_identical(a, train(5, 10)));  // other shuffling
  // Build alone is deterministic too, and depends on the seed.
  CHECK(bit_identical(all_weights(*sine_model(4, 0.01f)), all_weights(*sine_model(4, 0.01f))));
  CHECK_FALSE(bit_identical(all_weights(*sine_model(4, 0.01f)), all_weights(*sine_model(8, 0.01f))));
}

TEST_CASE("fit validates its inputs and compile state") {
  Matrix x, y;
  sine_data(4, 20, 0.0f, x, y);
  FitOptions opt;
  opt.epochs = 1;

  SUBCASE("fit before compile -> logic_error") {
    Sequential m;
    m.add(std::make_unique<Dense>(1));
    m.build(1, 1);
    CHECK_THROWS_AS(m.fit(x, y, opt), std::logic_error);
  }
  SUBCASE("predict/evaluate before build -> logic_error") {
    Sequential m;
    m.add(std::make_unique<Dense>(1));
    CHECK_THROWS_AS(m.predict(x), std::logic_error);
    CHECK_THROWS_AS(m.evaluate(x, y), std::logic_error);
  }
  SUBCASE("bad data -> invalid_argument") {
    auto m = sine_model(1, 0.01f);
    const std::vector<float> before = all_weights(*m);
    Matrix empty({0, 1}), empty_y({0, 1});
    CHECK_THROWS_AS(m->fit(empty, empty_y, opt), std::invalid_argument);
    Matrix xn = x;
    xn(3, 0) = std::nanf("");
    CHECK_THROWS_AS(m->fit(xn, y, opt), std::invalid_argument);
    xn(3, 0) = INFINITY;
    CHECK_THROWS_AS(m->fit(xn, y, opt), std::invalid_argument);
    Matrix yn = y;
    yn(0, 0) = std::nanf("");
    CHECK_THROWS_AS(m->fit(x, yn, opt), std::invalid_argument);
    Matrix y_rows({19, 1}), y_cols({20, 2}), x_cols({20, 2});
    CHECK_THROWS_AS(m->fit(x, y_rows, opt), std::invalid_argument);
    CHECK_THROWS_AS(m->fit(x, y_cols, opt), std::invalid_argument);
    CHECK_THROWS_AS(m->fit(x_cols, y, opt), std::invalid_argument);
    const Tensor xv = x, yv_rows = y_rows;
    CHECK_THROWS_AS(m->fit(x, y, opt, &xv, nullptr), std::invalid_argument);
    CHECK_THROWS_AS(m->fit(x, y, opt, &xv, &yv_rows), std::invalid_argument);
    FitOptions bad = opt;
    bad.batch_size = 0;
    CHECK_THROWS_AS(m->fit(x, y, bad), std::invalid_argument);
    bad = opt;
    bad.epochs = -1;
    CHECK_THROWS_AS(m->fit(x, y, bad), std::invalid_argument);
    bad = opt;
    bad.check_every = 0;  // would be a division by zero in the batch counter
    bad.callback = [](int, const std::map<std::string, float>&) { return true; };
    CHECK_THROWS_AS(m->fit(x, y, bad), std::invalid_argument);
    // Rejected calls leave the weights untouched.
    CHECK(bit_identical(before, all_weights(*m)));
    CHECK_THROWS_AS(m->predict(xn), std::invalid_argument);
    CHECK_THROWS_AS(m->predict(x, 0), std::invalid_argument);
  }
}

TEST_CASE("The callback stops training early and the model stays usable") {
  Matrix x, y;
  sine_data(6, 256, 0.05f, x, y);  // 4 batches of 64 per epoch

  SUBCASE("stop at the end of an epoch") {
    auto m = sine_model(2, 0.01f);
    std::vector<int> seen;
    FitOptions opt;
    opt.epochs = 50;
    opt.batch_size = 64;
    opt.seed = 3;
    opt.callback = [&](int epoch, const std::map<std::string, float>& logs) {
      if (epoch >= 0) {
        seen.push_back(epoch);
        CHECK(logs.count("loss") == 1);
        CHECK(std::isfinite(logs.at("loss")));
      }
      return epoch != 2;
    };
    const History h = m->fit(x, y, opt);
    CHECK(h.stopped);
    CHECK(h.epochs_run == 3);
    CHECK(seen == std::vector<int>{0, 1, 2});
    CHECK(h.history.at("loss").size() == 3);
    const Matrix p = m->predict(x);
    for (float v : p) CHECK(std::isfinite(v));
  }

  SUBCASE("stop between batches: weights hold exactly the completed steps") {
    // check_every = 1: the callback sees every batch with epoch = -1. Stopping at the 8th batch
    // (= 2 epochs of 4 batches) must leave the same weights as an uninterrupted 2-epoch run.
    auto m = sine_model(2, 0.01f);
    int batches = 0;
    FitOptions opt;
    opt.epochs = 50;
    opt.batch_size = 64;
    opt.seed = 3;
    opt.check_every = 1;
    opt.callback = [&](int epoch, const std::map<std::string, float>& logs) {
      if (epoch < 0) {
        CHECK(logs.empty());
        return ++batches < 8;
      }
      return true;
    };
    const History h = m->fit(x, y, opt);
    CHECK(h.stopped);
    CHECK(batches == 8);
    CHECK(h.epochs_run == 1);  // the second epoch's end was never reached

    auto ref = sine_model(2, 0.01f);
    FitOptions ropt;
    ropt.epochs = 2;
    ropt.batch_size = 64;
    ropt.seed = 3;
    ref->fit(x, y, ropt);
    CHECK(bit_identical(all_weights(*m), all_weights(*ref)));
    const Matrix p = m->predict(x);
    for (float v : p) CHECK(std::isfinite(v));
  }
}

TEST_CASE("a frozen middle layer: no update, no weight gradient, gradient still flows through it") {
  Matrix x, y;
  sine_data(3, 64, 0.05f, x, y);
  auto m = sine_model(2, 0.01f);
  auto& middle = dynamic_cast<Dense&>(m->layer(1));
  const std::size_t all = m->param_count();
  m->compile(std::make_unique<Adam>(0.01f), Loss::MSE, {}, false, {}, {&middle});
  CHECK(m->param_count() == all);  // frozen parameters still count
  CHECK(m->trainable_params().size() == 4);  // the first and last layers' kernels and biases
  const std::vector<float> before = all_weights(*m);
  middle.kernel_grad.fill(0.0f);
  middle.bias_grad.fill(0.0f);
  FitOptions opt;
  opt.epochs = 2;
  opt.batch_size = 16;
  m->fit(x, y, opt);
  const std::vector<float> after = all_weights(*m);
  const long a = 16 + 16, b = a + 16 * 16 + 16;  // the middle layer's weights are [a, b)
  CHECK_FALSE(bit_identical({before.begin(), before.begin() + a}, {after.begin(), after.begin() + a}));
  CHECK(bit_identical({before.begin() + a, before.begin() + b}, {after.begin() + a, after.begin() + b}));
  CHECK_FALSE(bit_identical({before.begin() + b, before.end()}, {after.begin() + b, after.end()}));
  for (float g : middle.kernel_grad) CHECK(g == 0.0f);  // no weight-gradient work was done
  for (float g : middle.bias_grad) CHECK(g == 0.0f);
}

TEST_CASE("Per-sample weights, initial_epoch and the batch hooks") {
  Matrix x, y;
  sine_data(7, 40, 0.05f, x, y);  // 4 batches of 10 per epoch
  auto sgd_model = [](float lr) {
    auto m = std::make_unique<Sequential>();
    m->add(std::make_unique<Dense>(8, Activation::ReLU));
    m->add(std::make_unique<Dense>(1));
    m->build(1, 4);
    m->compile(std::make_unique<SGD>(lr), Loss::MSE);
    return m;
  };
  FitOptions opt;
  opt.epochs = 2;
  opt.batch_size = 10;
  opt.seed = 5;

  SUBCASE("weight 2 on every sample is SGD with twice the learning rate, exactly") {
    auto a = sgd_model(0.01f), b = sgd_model(0.02f);
    FitOptions wopt = opt;
    wopt.sample_weight.assign(40, 2.0f);
    const History ha = a->fit(x, y, wopt), hb = b->fit(x, y, opt);
    CHECK(bit_identical(all_weights(*a), all_weights(*b)));
    // The logged loss is the weighted one: 2x the unweighted loss of the same first epoch.
    auto c = sgd_model(0.02f);
    FitOptions one = opt;
    one.epochs = 1;
    const History hc = c->fit(x, y, one);
    CHECK(ha.history.at("loss")[0] == doctest::Approx(2.0 * hc.history.at("loss")[0]).epsilon(1e-6));
    CHECK(a->evaluate(x, y, 1024, std::vector<float>(40, 3.0f))[0] ==
          doctest::Approx(3.0 * a->evaluate(x, y)[0]).epsilon(1e-6));
  }

  SUBCASE("initial_epoch numbers the epochs; a batch hook's false ends the epoch, then training") {
    auto m = sgd_model(0.01f);
    std::vector<int> epochs, batches;
    FitOptions o = opt;
    o.epochs = 5;
    o.initial_epoch = 3;
    o.callback = [&](int epoch, const Logs&) {
      if (epoch >= 0) epochs.push_back(epoch);
      return true;
    };
    o.batch_begin = [&](int batch) { batches.push_back(batch); };
    History h = m->fit(x, y, o);
    CHECK(epochs == std::vector<int>{3, 4});
    CHECK(h.epochs_run == 2);
    CHECK(batches == std::vector<int>{0, 1, 2, 3, 0, 1, 2, 3});

    float last = 0.0f;
    o.batch_end = [&](int batch, const Logs& logs) {
      last = logs.at("loss");
      return batch < 1;
    };
    epochs.clear();
    h = m->fit(x, y, o);
    CHECK(h.stopped);
    CHECK(epochs == std::vector<int>{3});
    CHECK(h.history.at("loss") == std::vector<float>{last});  // the epoch's 2 batches
  }

  SUBCASE("bad weights and options are refused") {
    auto m = sgd_model(0.01f);
    FitOptions bad = opt;
    bad.sample_weight.assign(39, 1.0f);
    CHECK_THROWS_AS(m->fit(x, y, bad), std::invalid_argument);
    bad.sample_weight.assign(40, 1.0f);
    bad.sample_weight[7] = -1.0f;
    CHECK_THROWS_AS(m->fit(x, y, bad), std::invalid_argument);
    bad.sample_weight[7] = NAN;
    CHECK_THROWS_AS(m->fit(x, y, bad), std::invalid_argument);
    CHECK_THROWS_AS(m->evaluate(x, y, 1024, bad.sample_weight), std::invalid_argument);
    bad = opt;
    bad.validation_freq = 0;
    CHECK_THROWS_AS(m->fit(x, y, bad), std::invalid_argument);
    bad = opt;
    bad.initial_epoch = -1;
    CHECK_THROWS_AS(m->fit(x, y, bad), std::invalid_argument);
  }
}
