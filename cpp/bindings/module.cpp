// tinylearn._core: the Python binding of the training core, the converter and the int8 runner.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>

#include "qgraph_dict.h"
#include "tinylearn/convert/convert.h"
#include "tinylearn/convert/qgraph.h"
#include "tinylearn/micro/format.h"
#include "tinylearn/train/cnn_layers.h"
#include "tinylearn/train/fake_quant.h"
#include "tinylearn/train/model.h"
#include "tinylearn/train/pruning.h"

namespace py = pybind11;
using namespace tinylearn;

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using Int8Array = py::array_t<std::int8_t, py::array::c_style | py::array::forcecast>;

// A float32 copy of an array with a batch dimension.
Tensor to_tensor(const FloatArray& a, const char* name) {
  if (a.ndim() < 1)
    throw std::invalid_argument(std::string(name) + ": expected an array of samples, got a scalar");
  std::vector<std::size_t> shape(a.shape(), a.shape() + a.ndim());
  Tensor t(shape);
  if (t.size()) std::memcpy(t.data(), a.data(), t.size() * sizeof(float));
  return t;
}

// Per-sample weights: none, or a 1-D array (checked by the core).
std::vector<float> to_weights(const std::optional<FloatArray>& a) {
  if (!a) return {};
  if (a->ndim() != 1) throw std::invalid_argument("sample weights: expected a 1-D array");
  return std::vector<float>(a->data(), a->data() + a->size());
}

template <class T>
py::array_t<float> to_array(const T& t) {
  std::vector<py::ssize_t> shape(t.shape().begin(), t.shape().end());
  py::array_t<float> a(shape);
  if (t.size()) std::memcpy(a.mutable_data(), t.data(), t.size() * sizeof(float));
  return a;
}

// Creates a layer from its Python-side configuration.
std::shared_ptr<Layer> make_layer(const std::string& kind, const py::dict& config) {
  if (kind == "Dense")
    return std::make_shared<Dense>(config["units"].cast<std::size_t>(),
                                   activation_from_name(config["activation"].cast<std::string>()),
                                   config["use_bias"].cast<bool>());
  if (kind == "Activation")
    return std::make_shared<ActivationLayer>(activation_from_name(config["activation"].cast<std::string>()));
  if (kind == "Conv2D")
    return std::make_shared<Conv2D>(
        config["filters"].cast<std::size_t>(), config["kernel_size"].cast<Size2>(),
        config["strides"].cast<Size2>(), ops::parse_padding(config["padding"].cast<std::string>()),
        activation_from_name(config["activation"].cast<std::string>()), config["use_bias"].cast<bool>());
  if (kind == "DepthwiseConv2D")
    return std::make_shared<DepthwiseConv2D>(
        config["kernel_size"].cast<Size2>(), config["strides"].cast<Size2>(),
        ops::parse_padding(config["padding"].cast<std::string>()),
        config["depth_multiplier"].cast<std::size_t>(),
        activation_from_name(config["activation"].cast<std::string>()), config["use_bias"].cast<bool>());
  if (kind == "MaxPooling2D")
    return std::make_shared<MaxPooling2D>(config["pool_size"].cast<Size2>(), config["strides"].cast<Size2>(),
                                          ops::parse_padding(config["padding"].cast<std::string>()));
  if (kind == "AveragePooling2D")
    return std::make_shared<AveragePooling2D>(config["pool_size"].cast<Size2>(),
                                              config["strides"].cast<Size2>(),
                                              ops::parse_padding(config["padding"].cast<std::string>()));
  if (kind == "GlobalAveragePooling2D") return std::make_shared<GlobalAveragePooling2D>();
  if (kind == "BatchNormalization")
    return std::make_shared<BatchNormalization>(config["momentum"].cast<float>(), config["epsilon"].cast<float>(),
                                                config["center"].cast<bool>(), config["scale"].cast<bool>());
  if (kind == "Dropout") {
    std::optional<std::uint64_t> seed;
    if (!config["seed"].is_none()) seed = config["seed"].cast<std::uint64_t>();
    return std::make_shared<Dropout>(config["rate"].cast<float>(), seed);
  }
  if (kind == "Flatten") return std::make_shared<Flatten>();
  if (kind == "Reshape") return std::make_shared<Reshape>(config["target_shape"].cast<std::vector<long>>());
  if (kind == "Add") return std::make_shared<Add>();
  if (kind == "Concatenate") return std::make_shared<Concatenate>();
  if (kind == "FakeQuant") {
    const auto mode = config["mode"].cast<std::string>();
    if (mode == "moving_average")
      return std::make_shared<FakeQuant>(config["ema_decay"].cast<float>(),
                                         config["quant_delay"].cast<std::int64_t>());
    if (mode == "fixed")
      return FakeQuant::fixed({config["scale"].cast<float>(), config["zero_point"].cast<std::int32_t>()});
    throw std::invalid_argument("FakeQuant: unknown mode '" + mode + "'");
  }
  throw std::invalid_argument("unknown layer kind '" + kind + "'");
}

// A layer's pruning from its Python configuration (tinylearn.optimize's prune_low_magnitude).
std::shared_ptr<Pruning> make_pruning(const py::dict& c) {
  auto p = std::make_shared<Pruning>();
  const py::dict sc = c["schedule"].cast<py::dict>();
  const auto kind = sc["class_name"].cast<std::string>();
  const py::dict a = sc["config"].cast<py::dict>();
  if (kind == "ConstantSparsity") {
    p->schedule.kind = PruningSchedule::Kind::Constant;
    p->schedule.final_sparsity = a["target_sparsity"].cast<float>();
  } else if (kind == "PolynomialDecay") {
    p->schedule.kind = PruningSchedule::Kind::PolynomialDecay;
    p->schedule.initial_sparsity = a["initial_sparsity"].cast<float>();
    p->schedule.final_sparsity = a["final_sparsity"].cast<float>();
    p->schedule.power = a["power"].cast<float>();
  } else {
    throw std::invalid_argument("unknown pruning schedule '" + kind + "'");
  }
  p->schedule.begin_step = a["begin_step"].cast<std::int64_t>();
  p->schedule.end_step = a["end_step"].cast<std::int64_t>();
  p->schedule.frequency = a["frequency"].cast<std::int64_t>();
  p->schedule.validate();
  const auto block = c["block_size"].cast<std::array<std::size_t, 2>>();
  p->block_rows = block[0];
  p->block_cols = block[1];
  if (!c["sparsity_m_by_n"].is_none()) {
    const auto mn = c["sparsity_m_by_n"].cast<std::array<int, 2>>();
    p->keep_m = mn[0];
    p->of_n = mn[1];
  }
  p->global = c["scope"].cast<std::string>() == "global";
  return p;
}

// The C++ model and the layers created for it, keyed by the Python layer's id (so a layer used
// twice shares its weights).
struct PyModel {
  Model model;
  std::map<std::int64_t, std::shared_ptr<Layer>> layers;
  // Calls from several Python threads take turns: the layers keep scratch buffers between calls
  // (and fit changes the weights that predict reads). Recursive: fit's callbacks may call the
  // model (predict on validation data, set_weights to restore the best ones).
  mutable std::recursive_mutex mutex;

  Layer& layer(std::int64_t key) {
    auto it = layers.find(key);
    if (it == layers.end()) throw std::out_of_range("no layer with key " + std::to_string(key));
    return *it->second;
  }
};

// Holds the model's lock. Waits for it with the GIL released, since the thread that holds it may
// need the GIL to finish (fit's callbacks); returns with the GIL held.
std::unique_lock<std::recursive_mutex> lock(const PyModel& p) {
  std::unique_lock<std::recursive_mutex> held(p.mutex, std::try_to_lock);
  if (!held.owns_lock()) {
    py::gil_scoped_release release;
    held.lock();
  }
  return held;
}

std::unique_ptr<Optimizer> make_optimizer(const std::string& name, float lr, float momentum,
                                          bool nesterov, float beta_1, float beta_2, float eps,
                                          float weight_decay, float rho, bool centered,
                                          const py::object& schedule) {
  std::unique_ptr<Optimizer> opt;
  if (name == "adam" || name == "adamw")
    opt = std::make_unique<Adam>(lr, beta_1, beta_2, eps, name == "adamw" ? weight_decay : 0.0f);
  else if (name == "sgd")
    opt = std::make_unique<SGD>(lr, momentum, nesterov);
  else if (name == "rmsprop")
    opt = std::make_unique<RMSprop>(lr, rho, momentum, eps, centered);
  else
    throw std::invalid_argument("unknown optimizer '" + name +
                                "': expected 'adam', 'adamw', 'rmsprop' or 'sgd'");
  if (!schedule.is_none()) {
    const py::dict d = schedule.cast<py::dict>();
    const std::string kind = d["schedule"].cast<std::string>();
    auto& s = opt->schedule;
    s.initial = d["initial_learning_rate"].cast<float>();
    s.steps = d["decay_steps"].cast<std::int64_t>();
    if (s.steps < 1 || !(s.initial > 0.0f)) throw std::invalid_argument("schedule: decay_steps and the initial learning rate must be positive");
    if (kind == "exponential_decay") {
      s.kind = Optimizer::Schedule::ExponentialDecay;
      s.rate = d["decay_rate"].cast<float>();
      s.staircase = d["staircase"].cast<bool>();
    } else if (kind == "cosine_decay") {
      s.kind = Optimizer::Schedule::CosineDecay;
      s.rate = d["alpha"].cast<float>();
    } else {
      throw std::invalid_argument("unknown learning-rate schedule '" + kind + "'");
    }
    opt->learning_rate = s.initial;
  }
  return opt;
}

Loss loss_from_name(const std::string& name) {
  for (Loss l : {Loss::MSE, Loss::MAE, Loss::BinaryCrossentropy, Loss::CategoricalCrossentropy,
                 Loss::SparseCategoricalCrossentropy, Loss::Huber})
    if (name == loss_name(l)) return l;
  throw std::invalid_argument("unknown loss '" + name + "'");
}

Metric metric_from_name(const std::string& name) {
  if (name == "mae") return Metric::MAE;
  if (name == "mse") return Metric::MSE;
  if (name == "accuracy") return Metric::Accuracy;
  if (name == "sparse_categorical_accuracy") return Metric::SparseCategoricalAccuracy;
  if (name == "categorical_accuracy") return Metric::CategoricalAccuracy;
  if (name == "binary_accuracy") return Metric::BinaryAccuracy;
  throw std::invalid_argument("unknown metric '" + name +
                              "': expected 'mae', 'mse', 'accuracy', 'sparse_categorical_accuracy', "
                              "'categorical_accuracy' or 'binary_accuracy'");
}

py::dict tensor_dict(const tlm_tensor_info& t) {
  py::dict d;
  py::tuple shape(t.rank);
  for (int k = 0; k < t.rank; ++k) shape[k] = t.dims[k];
  d["shape"] = shape;
  d["scale"] = t.scale;
  d["zero_point"] = t.zero_point;
  d["bytes"] = t.bytes;
  d["dtype"] = t.type == TLM_TYPE_FLOAT32 ? "float32" : t.type == TLM_TYPE_INT32 ? "int32" : "int8";
  return d;
}

// n rows of x (C order, the model's inputs each) through the model, without the GIL: (n, outputs).
py::array_t<std::int8_t> invoke_rows(Int8Model& q, const std::int8_t* x, std::size_t n) {
  py::array_t<std::int8_t> y({n, std::size_t(q.output_size())});
  {
    py::gil_scoped_release release;
    q.invoke(x, y.mutable_data(), n);
  }
  return y;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "tinylearn C++ core: training, int8 conversion and the freestanding inference core";
  m.attr("FORMAT_VERSION") = TLM_FORMAT_VERSION;

  py::class_<PyModel>(m, "Model")
      .def(py::init<>())
      .def("add_input",
           [](PyModel& p, const std::vector<std::size_t>& shape) {
             const auto held = lock(p);
             return p.model.add_input(shape);
           })
      .def("add_layer",
           [](PyModel& p, std::int64_t key, const std::string& kind, const std::string& name,
              const py::dict& config, const std::vector<int>& inputs, PyModel* share_from) {
             const auto held = lock(p);
             auto it = p.layers.find(key);
             std::shared_ptr<Layer> layer;
             if (it != p.layers.end()) {
               layer = it->second;
             } else if (share_from) {  // the very layer (weights) of another model
               auto other = share_from->layers.find(key);
               if (other == share_from->layers.end())
                 throw std::invalid_argument("layer '" + name + "' is not in the model to share it from");
               layer = other->second;
               p.layers[key] = layer;
             } else {
               if (kind == "FakeQuant" && config["mode"].cast<std::string>() == "same_as") {
                 // The quantization of another FakeQuant of this model, by its name.
                 const auto source = config["source"].cast<std::string>();
                 std::shared_ptr<const FakeQuant> src;
                 for (const auto& kv : p.layers)
                   if (kv.second->name == source)
                     src = std::dynamic_pointer_cast<const FakeQuant>(kv.second);
                 if (!src)
                   throw std::invalid_argument("layer '" + name + "' (FakeQuant): its source '" +
                                               source + "' is not a FakeQuant before it in the model");
                 layer = FakeQuant::same_as(src);
               } else {
                 layer = make_layer(kind, config);
               }
               layer->name = name;
               if (config.contains("weight_bits")) layer->weight_bits = config["weight_bits"].cast<int>();
               if (config.contains("pruning") && !config["pruning"].is_none())
                 layer->pruning = make_pruning(config["pruning"].cast<py::dict>());
               if (config.contains("kernel_initializer"))
                 layer->kernel_initializer =
                     initializer_from_name(config["kernel_initializer"].cast<std::string>());
               if (config.contains("kernel_l2")) layer->kernel_l2 = config["kernel_l2"].cast<float>();
               p.layers[key] = layer;
             }
             return p.model.add_node(layer, inputs);
           },
           py::arg("key"), py::arg("kind"), py::arg("name"), py::arg("config"), py::arg("inputs"),
           py::arg("share_from") = nullptr)
      .def("set_output",
           [](PyModel& p, int node) {
             const auto held = lock(p);
             p.model.set_output(node);
           })
      .def("build",
           [](PyModel& p, std::uint64_t seed) {
             const auto held = lock(p);
             p.model.build(seed);
           },
           py::arg("seed"))
      .def_property_readonly("built",
                             [](const PyModel& p) {
                               const auto held = lock(p);
                               return p.model.built();
                             })
      .def("node_shape",
           [](const PyModel& p, int node) {
             const auto held = lock(p);
             return p.model.node(std::size_t(node)).shape;
           })
      .def("compile",
           [](PyModel& p, const std::string& optimizer, float lr, float momentum, bool nesterov,
              float beta_1, float beta_2, float eps, float weight_decay, float rho, bool centered,
              const py::object& schedule, const std::string& loss, bool from_logits,
              const std::vector<std::string>& metrics, const std::vector<std::string>& metric_names,
              const std::vector<std::int64_t>& frozen, float huber_delta, bool distillation,
              float alpha, float temperature, bool teacher_from_logits) {
             const auto held = lock(p);
             Distillation dist;
             dist.enabled = distillation;
             dist.alpha = alpha;
             dist.temperature = temperature;
             dist.teacher_from_logits = teacher_from_logits;
             std::vector<Metric> ms;
             for (const auto& name : metrics) ms.push_back(metric_from_name(name));
             std::vector<const Layer*> fl;
             for (std::int64_t key : frozen) fl.push_back(&p.layer(key));
             p.model.compile(make_optimizer(optimizer, lr, momentum, nesterov, beta_1, beta_2, eps,
                                            weight_decay, rho, centered, schedule),
                             loss_from_name(loss), ms, from_logits, metric_names, fl, huber_delta, dist);
           },
           py::arg("optimizer"), py::arg("learning_rate"), py::arg("momentum") = 0.0f,
           py::arg("nesterov") = false, py::arg("beta_1") = 0.9f, py::arg("beta_2") = 0.999f,
           py::arg("epsilon") = 1e-7f, py::arg("weight_decay") = 0.0f, py::arg("rho") = 0.9f,
           py::arg("centered") = false, py::arg("schedule") = py::none(), py::arg("loss") = "mse",
           py::arg("from_logits") = false, py::arg("metrics") = std::vector<std::string>{},
           py::arg("metric_names") = std::vector<std::string>{},
           py::arg("frozen") = std::vector<std::int64_t>{}, py::arg("huber_delta") = 1.0f,
           py::arg("distillation") = false, py::arg("alpha") = 0.1f, py::arg("temperature") = 3.0f,
           py::arg("teacher_from_logits") = true)
      .def_property("learning_rate",
                    [](PyModel& p) {
                      const auto held = lock(p);
                      if (!p.model.optimizer()) throw std::logic_error("the model is not compiled");
                      return p.model.optimizer()->learning_rate;
                    },
                    [](PyModel& p, float lr) {
                      const auto held = lock(p);
                      if (!p.model.optimizer()) throw std::logic_error("the model is not compiled");
                      if (!(lr > 0.0f)) throw std::invalid_argument("learning_rate must be positive");
                      p.model.optimizer()->learning_rate = lr;
                    })
      .def(
          "fit",
          [](PyModel& p, const FloatArray& x, const FloatArray& y, int epochs,
             std::size_t batch_size, bool shuffle, std::uint64_t seed,
             std::optional<FloatArray> x_val, std::optional<FloatArray> y_val,
             py::object on_epoch, std::size_t check_every, std::vector<float> class_weight,
             std::optional<FloatArray> sample_weight,
             std::optional<FloatArray> validation_sample_weight,
             int initial_epoch, int validation_freq, std::size_t validation_batch_size,
             py::object on_batch_begin, py::object on_batch_end, py::object on_test_begin,
             py::object on_test_end) {
            const auto held = lock(p);
            const Tensor xm = to_tensor(x, "x"), ym = to_tensor(y, "y");
            Tensor xv, yv;
            if (x_val) xv = to_tensor(*x_val, "validation x");
            if (y_val) yv = to_tensor(*y_val, "validation y");
            FitOptions opt;
            opt.epochs = epochs;
            opt.initial_epoch = initial_epoch;
            opt.batch_size = batch_size;
            opt.shuffle = shuffle;
            opt.seed = seed;
            opt.check_every = check_every;
            opt.class_weight = std::move(class_weight);
            opt.sample_weight = to_weights(sample_weight);
            opt.validation_sample_weight = to_weights(validation_sample_weight);
            opt.validation_freq = validation_freq;
            opt.validation_batch_size = validation_batch_size;
            // Runs with the GIL released; takes it back once per epoch (and every check_every
            // batches) to report progress and to see Ctrl-C. A Python exception (KeyboardInterrupt
            // included) stops training after a completed step and propagates to the caller.
            opt.callback = [&on_epoch](int epoch, const Logs& logs) {
              py::gil_scoped_acquire gil;
              if (PyErr_CheckSignals() != 0) throw py::error_already_set();
              if (epoch < 0 || on_epoch.is_none()) return true;
              py::object r = on_epoch(epoch, logs);
              return r.is_none() || r.cast<bool>();
            };
            // The optional hooks take the GIL only when given: fit without them never returns to
            // Python between batches (except every check_every batches, for Ctrl-C).
            if (!on_batch_begin.is_none())
              opt.batch_begin = [&on_batch_begin](int batch) {
                py::gil_scoped_acquire gil;
                on_batch_begin(batch);
              };
            if (!on_batch_end.is_none())
              opt.batch_end = [&on_batch_end](int batch, const Logs& logs) {
                py::gil_scoped_acquire gil;
                if (PyErr_CheckSignals() != 0) throw py::error_already_set();
                py::object r = on_batch_end(batch, logs);
                return r.is_none() || r.cast<bool>();
              };
            if (!on_test_begin.is_none())
              opt.test_begin = [&on_test_begin]() {
                py::gil_scoped_acquire gil;
                on_test_begin();
              };
            if (!on_test_end.is_none())
              opt.test_end = [&on_test_end](const Logs& logs) {
                py::gil_scoped_acquire gil;
                on_test_end(logs);
              };
            History h;
            {
              py::gil_scoped_release release;
              h = p.model.fit(xm, ym, opt, x_val ? &xv : nullptr, y_val ? &yv : nullptr);
            }
            return py::make_tuple(h.history, h.epochs_run, h.stopped);
          },
          py::arg("x"), py::arg("y"), py::arg("epochs"), py::arg("batch_size"),
          py::arg("shuffle"), py::arg("seed"), py::arg("x_val") = py::none(),
          py::arg("y_val") = py::none(), py::arg("on_epoch") = py::none(),
          py::arg("check_every") = 256, py::arg("class_weight") = std::vector<float>{},
          py::arg("sample_weight") = py::none(), py::arg("validation_sample_weight") = py::none(),
          py::arg("initial_epoch") = 0,
          py::arg("validation_freq") = 1, py::arg("validation_batch_size") = 1024,
          py::arg("on_batch_begin") = py::none(), py::arg("on_batch_end") = py::none(),
          py::arg("on_test_begin") = py::none(), py::arg("on_test_end") = py::none())
      .def("predict",
           [](PyModel& p, const FloatArray& x, std::size_t batch_size) {
             const auto held = lock(p);
             const Tensor xm = to_tensor(x, "x");
             Tensor out;
             {
               py::gil_scoped_release release;
               out = p.model.predict(xm, batch_size);
             }
             return to_array(out);
           },
           py::arg("x"), py::arg("batch_size") = 1024)
      .def("evaluate",
           [](PyModel& p, const FloatArray& x, const FloatArray& y, std::size_t batch_size,
              const std::optional<FloatArray>& sample_weight) {
             const auto held = lock(p);
             const Tensor xm = to_tensor(x, "x"), ym = to_tensor(y, "y");
             const std::vector<float> w = to_weights(sample_weight);
             py::gil_scoped_release release;
             return p.model.evaluate(xm, ym, batch_size, w);
           },
           py::arg("x"), py::arg("y"), py::arg("batch_size") = 1024,
           py::arg("sample_weight") = py::none())
      .def("get_optimizer_state",
           [](PyModel& p) {
             const auto held = lock(p);
             Optimizer* opt = p.model.optimizer();
             if (!opt) throw std::logic_error("the model is not compiled");
             py::list arrays;
             for (std::vector<float>* v : opt->slots()) {
               py::array_t<float> a(py::ssize_t(v->size()));
               std::memcpy(a.mutable_data(), v->data(), v->size() * sizeof(float));
               arrays.append(a);
             }
             return py::make_tuple(opt->iterations, arrays);
           })
      .def("set_optimizer_state",
           [](PyModel& p, std::int64_t iterations, const std::vector<FloatArray>& arrays) {
             const auto held = lock(p);
             Optimizer* opt = p.model.optimizer();
             if (!opt) throw std::logic_error("the model is not compiled");
             if (!p.model.built()) throw std::logic_error("the model is not built");
             opt->iterations = iterations;
             if (arrays.empty()) return;
             opt->prepare(p.model.trainable_params());
             std::vector<std::vector<float>*> slots = opt->slots();
             if (slots.size() != arrays.size())
               throw std::invalid_argument("optimizer state: expected " + std::to_string(slots.size()) +
                                           " arrays, got " + std::to_string(arrays.size()));
             for (std::size_t i = 0; i < slots.size(); ++i) {
               if (std::size_t(arrays[i].size()) != slots[i]->size())
                 throw std::invalid_argument("optimizer state: array " + std::to_string(i) + " has " +
                                             std::to_string(arrays[i].size()) + " values, expected " +
                                             std::to_string(slots[i]->size()));
               std::memcpy(slots[i]->data(), arrays[i].data(), slots[i]->size() * sizeof(float));
             }
           })
      .def("get_weights",
           [](PyModel& p, std::int64_t key) {
             const auto held = lock(p);
             py::list out;
             std::vector<Param> all = p.layer(key).params();
             for (const Param& st : p.layer(key).state()) all.push_back(st);
             for (const Param& prm : all) {
               std::vector<py::ssize_t> shape(prm.shape.begin(), prm.shape.end());
               if (shape.empty()) shape.push_back(py::ssize_t(prm.size));
               py::array_t<float> a(shape);
               std::memcpy(a.mutable_data(), prm.value, prm.size * sizeof(float));
               out.append(a);
             }
             return out;
           })
      .def("set_weights", [](PyModel& p, std::int64_t key, const std::vector<FloatArray>& arrays) {
        const auto held = lock(p);
        Layer& l = p.layer(key);
        std::vector<Param> params = l.params();
        for (const Param& st : l.state()) params.push_back(st);
        if (arrays.size() != params.size())
          throw std::invalid_argument("layer '" + l.name + "': expected " + std::to_string(params.size()) +
                                      " weight arrays, got " + std::to_string(arrays.size()));
        for (std::size_t i = 0; i < params.size(); ++i)
          if (std::size_t(arrays[i].size()) != params[i].size)
            throw std::invalid_argument("layer '" + l.name + "': " + params[i].name + " expects " +
                                        std::to_string(params[i].size) + " values, got " +
                                        std::to_string(arrays[i].size()));
        for (std::size_t i = 0; i < params.size(); ++i)
          std::memcpy(params[i].value, arrays[i].data(), params[i].size * sizeof(float));
      });

  m.def(
      "convert",
      [](PyModel& p, const FloatArray& representative) {
        const auto held = lock(p);
        const Tensor r = to_tensor(representative, "representative_data");
        std::vector<std::uint8_t> blob;
        {
          py::gil_scoped_release release;
          blob = convert(p.model, r);
        }
        return py::bytes(reinterpret_cast<const char*>(blob.data()), blob.size());
      },
      py::arg("model"), py::arg("representative_data"));

  m.def(
      "quantize",
      [](PyModel& p, const FloatArray& representative) {
        const auto held = lock(p);
        const Tensor r = to_tensor(representative, "representative_data");
        QGraph g;
        {
          py::gil_scoped_release release;
          g = quantize(p.model, r);
        }
        return bindings::to_dict(g);
      },
      py::arg("model"), py::arg("representative_data"),
      "Post-training int8 quantization into a graph dict (see cpp/bindings/qgraph_dict.h).");
  m.def(
      "lower",
      [](const py::dict& graph, const std::string& weight_encoding) {
        WeightEncoding e;
        if (weight_encoding == "auto") e = WeightEncoding::Auto;
        else if (weight_encoding == "dense") e = WeightEncoding::Dense;
        else if (weight_encoding == "sparse") e = WeightEncoding::Sparse;
        else
          throw py::value_error("weight_encoding must be 'auto', 'dense' or 'sparse', got '" +
                                weight_encoding + "'");
        const QGraph g = bindings::from_dict(graph);
        std::vector<std::uint8_t> blob;
        {
          py::gil_scoped_release release;
          blob = lower(g, e);
        }
        return py::bytes(reinterpret_cast<const char*>(blob.data()), blob.size());
      },
      py::arg("graph"), py::arg("weight_encoding") = "auto",
      "Serializes a graph dict into a model blob (arena planned); weight_encoding: 'auto' (each "
      "FULLY_CONNECTED / CONV_2D weight tensor dense or sparse, whichever is smaller), 'dense' or "
      "'sparse' (wherever the format allows).");

  m.def("inspect_blob",
        [](const py::bytes& blob) {
          const std::string_view v(blob);
          std::vector<std::uint32_t> aligned((v.size() + 3) / 4 + 1, 0);
          std::memcpy(aligned.data(), v.data(), v.size());
          tlm_model model;
          model.error_op = model.error_tensor = TLM_NO_INDEX;
          const tlm_status s = tlm_model_init(&model, aligned.data(), v.size());
          return py::make_tuple(int(s), s == TLM_OK ? tlm_arena_bytes(&model) : 0u,
                                int(model.error_op), int(model.error_tensor));
        },
        py::arg("blob"),
        "Validates a model blob without allocating its arena: (status, arena bytes, index of the "
        "rejected operator, index of the rejected tensor), 0xFFFF for neither.");
  m.def("status_str", [](int s) { return std::string(tlm_status_str(tlm_status(s))); });

  py::class_<Int8Model>(m, "Int8Model")
      .def(py::init([](const py::bytes& blob, bool host_sparse) {
             const std::string_view v(blob);
             return Int8Model(reinterpret_cast<const std::uint8_t*>(v.data()), v.size(), host_sparse);
           }),
           py::arg("blob"), py::arg("host_sparse") = false)
      .def_property_readonly("input", [](const Int8Model& q) { return tensor_dict(q.input_info()); })
      .def_property_readonly("output", [](const Int8Model& q) { return tensor_dict(q.output_info()); })
      .def_property_readonly("arena_bytes", [](const Int8Model& q) { return tlm_arena_bytes(&q.model()); })
      .def_property_readonly("size_bytes", &Int8Model::blob_bytes)
      .def_property_readonly("blob", [](const Int8Model& q) {
        const std::vector<std::uint8_t> b = q.blob();
        return py::bytes(reinterpret_cast<const char*>(b.data()), b.size());
      })
      .def("invoke",
           [](Int8Model& q, const Int8Array& x) {
             const std::size_t in = q.input_size();
             if (x.ndim() != 2 || std::size_t(x.shape(1)) != in)
               throw std::invalid_argument("invoke: expected int8 input of shape (N, " + std::to_string(in) +
                                           ")");
             return invoke_rows(q, x.data(), std::size_t(x.shape(0)));
           })
      // invoke's fast path for single samples: an int8 ndarray of shape (N >= 1, inputs), C order,
      // is read in place (its checks here cost tens of nanoseconds; in Python, about a
      // microsecond); anything else gives None, and the wrapper checks and converts it.
      .def("invoke_exact",
           [](Int8Model& q, const py::handle& h) -> py::object {
             if (!py::isinstance<py::array>(h)) return py::none();
             const auto x = py::reinterpret_borrow<py::array>(h);
             const std::size_t in = q.input_size();
             if (x.ndim() != 2 || x.shape(0) < 1 || std::size_t(x.shape(1)) != in ||
                 !(x.flags() & py::array::c_style) || x.itemsize() != 1 || x.dtype().kind() != 'i')
               return py::none();
             return invoke_rows(q, static_cast<const std::int8_t*>(x.data()), std::size_t(x.shape(0)));
           })
      .def("predict", [](Int8Model& q, const FloatArray& x) {
        const std::size_t in = q.input_elements(), out = q.output_elements();
        if (x.ndim() != 2 || std::size_t(x.shape(1)) != in)
          throw std::invalid_argument("predict: expected input of shape (N, " + std::to_string(in) + ")");
        const std::size_t n = std::size_t(x.shape(0));
        py::array_t<float> y({n, out});
        {
          py::gil_scoped_release release;
          q.predict(x.data(), y.mutable_data(), n);
        }
        return y;
      });
}
