// tinylearn._core: the Python binding of the training core, the converter and the int8 runner.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <stdexcept>

#include "tinylearn/convert/convert.h"
#include "tinylearn/micro/format.h"
#include "tinylearn/train/model.h"

namespace py = pybind11;
using namespace tinylearn;

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using Int8Array = py::array_t<std::int8_t, py::array::c_style | py::array::forcecast>;

// A (N, F) float32 copy of a 2-D array.
Matrix to_matrix(const FloatArray& a, const char* name) {
  if (a.ndim() != 2)
    throw std::invalid_argument(std::string(name) + ": expected a 2-D array (samples, features), got " +
                                std::to_string(a.ndim()) + "-D");
  Matrix m({std::size_t(a.shape(0)), std::size_t(a.shape(1))});
  if (m.size()) std::memcpy(m.data(), a.data(), m.size() * sizeof(float));
  return m;
}

py::array_t<float> to_array(const Matrix& m) {
  py::array_t<float> a({m.shape()[0], m.shape()[1]});
  if (m.size()) std::memcpy(a.mutable_data(), m.data(), m.size() * sizeof(float));
  return a;
}

std::unique_ptr<Optimizer> make_optimizer(const std::string& name, float lr, float momentum,
                                          bool nesterov, float beta_1, float beta_2, float eps) {
  if (name == "adam") return std::make_unique<Adam>(lr, beta_1, beta_2, eps);
  if (name == "sgd") return std::make_unique<SGD>(lr, momentum, nesterov);
  throw std::invalid_argument("unknown optimizer '" + name + "': expected 'adam' or 'sgd'");
}

Loss loss_from_name(const std::string& name) {
  if (name == "mse" || name == "mean_squared_error") return Loss::MSE;
  throw std::invalid_argument("unknown loss '" + name + "': expected 'mse'");
}

Metric metric_from_name(const std::string& name) {
  if (name == "mae" || name == "mean_absolute_error") return Metric::MAE;
  if (name == "mse" || name == "mean_squared_error") return Metric::MSE;
  throw std::invalid_argument("unknown metric '" + name + "': expected 'mae' or 'mse'");
}

Dense& dense_at(Sequential& s, std::size_t i) {
  if (i >= s.size()) throw std::out_of_range("layer index " + std::to_string(i) + " out of range");
  auto* d = dynamic_cast<Dense*>(&s.layer(i));
  if (!d) throw std::invalid_argument("layer " + std::to_string(i) + " is not Dense");
  return *d;
}

py::dict tensor_dict(const tlm_tensor_info& t) {
  py::dict d;
  py::tuple shape(t.rank);
  for (int k = 0; k < t.rank; ++k) shape[k] = t.dims[k];
  d["shape"] = shape;
  d["scale"] = t.scale;
  d["zero_point"] = t.zero_point;
  d["bytes"] = t.bytes;
  return d;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "tinylearn C++ core: training, int8 conversion and the freestanding inference core";
  m.attr("FORMAT_VERSION") = TLM_FORMAT_VERSION;

  py::class_<Sequential>(m, "Sequential")
      .def(py::init<>())
      .def("add_dense",
           [](Sequential& s, std::size_t units, const std::string& activation, bool use_bias) {
             s.add(std::make_unique<Dense>(units, activation_from_name(activation), use_bias));
           },
           py::arg("units"), py::arg("activation") = "linear", py::arg("use_bias") = true)
      .def("build", &Sequential::build, py::arg("input_features"), py::arg("seed"))
      .def_property_readonly("built", &Sequential::built)
      .def_property_readonly("compiled", &Sequential::compiled)
      .def("__len__", &Sequential::size)
      .def("compile",
           [](Sequential& s, const std::string& optimizer, float lr, float momentum, bool nesterov,
              float beta_1, float beta_2, float eps, const std::string& loss,
              const std::vector<std::string>& metrics) {
             std::vector<Metric> ms;
             for (const auto& name : metrics) ms.push_back(metric_from_name(name));
             s.compile(make_optimizer(optimizer, lr, momentum, nesterov, beta_1, beta_2, eps),
                       loss_from_name(loss), ms);
           },
           py::arg("optimizer"), py::arg("learning_rate"), py::arg("momentum") = 0.0f,
           py::arg("nesterov") = false, py::arg("beta_1") = 0.9f, py::arg("beta_2") = 0.999f,
           py::arg("epsilon") = 1e-7f, py::arg("loss") = "mse",
           py::arg("metrics") = std::vector<std::string>{})
      .def(
          "fit",
          [](Sequential& s, const FloatArray& x, const FloatArray& y, int epochs,
             std::size_t batch_size, bool shuffle, std::uint64_t seed,
             std::optional<FloatArray> x_val, std::optional<FloatArray> y_val,
             py::object on_epoch, std::size_t check_every) {
            const Matrix xm = to_matrix(x, "x"), ym = to_matrix(y, "y");
            Matrix xv, yv;
            if (x_val) xv = to_matrix(*x_val, "validation x");
            if (y_val) yv = to_matrix(*y_val, "validation y");
            FitOptions opt;
            opt.epochs = epochs;
            opt.batch_size = batch_size;
            opt.shuffle = shuffle;
            opt.seed = seed;
            opt.check_every = check_every;
            // Runs with the GIL released; takes it back once per epoch (and every check_every
            // batches) to report progress and to see Ctrl-C. A Python exception (KeyboardInterrupt
            // included) stops training after a completed step and propagates to the caller.
            opt.callback = [&on_epoch](int epoch, const std::map<std::string, float>& logs) {
              py::gil_scoped_acquire gil;
              if (PyErr_CheckSignals() != 0) throw py::error_already_set();
              if (epoch < 0 || on_epoch.is_none()) return true;
              py::object r = on_epoch(epoch, logs);
              return r.is_none() || r.cast<bool>();
            };
            History h;
            {
              py::gil_scoped_release release;
              h = s.fit(xm, ym, opt, x_val ? &xv : nullptr, y_val ? &yv : nullptr);
            }
            return py::make_tuple(h.history, h.epochs_run, h.stopped);
          },
          py::arg("x"), py::arg("y"), py::arg("epochs"), py::arg("batch_size"),
          py::arg("shuffle"), py::arg("seed"), py::arg("x_val") = py::none(),
          py::arg("y_val") = py::none(), py::arg("on_epoch") = py::none(),
          py::arg("check_every") = 256)
      .def("predict",
           [](const Sequential& s, const FloatArray& x, std::size_t batch_size) {
             const Matrix xm = to_matrix(x, "x");
             Matrix out;
             {
               py::gil_scoped_release release;
               out = s.predict(xm, batch_size);
             }
             return to_array(out);
           },
           py::arg("x"), py::arg("batch_size") = 1024)
      .def("evaluate",
           [](const Sequential& s, const FloatArray& x, const FloatArray& y, std::size_t batch_size) {
             return s.evaluate(to_matrix(x, "x"), to_matrix(y, "y"), batch_size);
           },
           py::arg("x"), py::arg("y"), py::arg("batch_size") = 1024)
      .def("get_layer_weights",
           [](Sequential& s, std::size_t i) {
             Dense& d = dense_at(s, i);
             py::list out;
             out.append(to_array(d.kernel));
             if (d.use_bias()) {
               py::array_t<float> b(d.bias.size());
               std::memcpy(b.mutable_data(), d.bias.data(), d.bias.size() * sizeof(float));
               out.append(b);
             }
             return out;
           })
      .def("set_layer_weights",
           [](Sequential& s, std::size_t i, const FloatArray& kernel, std::optional<FloatArray> bias) {
             Dense& d = dense_at(s, i);
             const auto& ks = d.kernel.shape();
             if (kernel.ndim() != 2 || std::size_t(kernel.shape(0)) != ks[0] ||
                 std::size_t(kernel.shape(1)) != ks[1])
               throw std::invalid_argument("layer " + std::to_string(i) + ": expected a kernel of shape (" +
                                           std::to_string(ks[0]) + ", " + std::to_string(ks[1]) + ")");
             if (d.use_bias() != bias.has_value() ||
                 (bias && (bias->ndim() != 1 || std::size_t(bias->shape(0)) != d.units())))
               throw std::invalid_argument("layer " + std::to_string(i) + ": expected " +
                                           (d.use_bias() ? "a bias of shape (" + std::to_string(d.units()) + ",)"
                                                         : std::string("no bias")));
             std::memcpy(d.kernel.data(), kernel.data(), d.kernel.size() * sizeof(float));
             if (bias) std::memcpy(d.bias.data(), bias->data(), d.bias.size() * sizeof(float));
           },
           py::arg("index"), py::arg("kernel"), py::arg("bias") = py::none());

  m.def(
      "convert",
      [](const Sequential& s, const FloatArray& representative) {
        const Matrix r = to_matrix(representative, "representative_data");
        std::vector<std::uint8_t> blob;
        {
          py::gil_scoped_release release;
          blob = convert(s, r);
        }
        return py::bytes(reinterpret_cast<const char*>(blob.data()), blob.size());
      },
      py::arg("model"), py::arg("representative_data"));

  py::class_<Int8Model>(m, "Int8Model")
      .def(py::init([](const py::bytes& blob) {
             const std::string_view v(blob);
             return Int8Model(reinterpret_cast<const std::uint8_t*>(v.data()), v.size());
           }),
           py::arg("blob"))
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
             const std::size_t in = q.input_size(), out = q.output_size();
             if (x.ndim() != 2 || std::size_t(x.shape(1)) != in)
               throw std::invalid_argument("invoke: expected int8 input of shape (N, " + std::to_string(in) +
                                           ")");
             const std::size_t n = std::size_t(x.shape(0));
             py::array_t<std::int8_t> y({n, out});
             {
               py::gil_scoped_release release;
               q.invoke(x.data(), y.mutable_data(), n);
             }
             return y;
           })
      .def("predict", [](Int8Model& q, const FloatArray& x) {
        const std::size_t in = q.input_size(), out = q.output_size();
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
