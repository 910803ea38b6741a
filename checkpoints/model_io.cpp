#include "checkpoints/model_io.h"

#include <map>

namespace mg {

namespace {

std::vector<int64_t> shape_of(const Tensor& t) { return {t.shape().begin(), t.shape().end()}; }

void write_tensor(H5File& f, const std::string& path, const Tensor& t) {
  MG_CHECK(t.dtype() == DType::F32, "[checkpoint] {} is {}: checkpoints hold float32 models", t.name(),
           dtype_name(t.dtype()));
  f.write(path, DType::F32, shape_of(t), t.to(Device::CPU).raw());  // a GPU tensor via a host copy
}

// Reads a float32 dataset into `t`, on whichever device it lives.
void read_tensor(const H5File& f, const std::string& path, Tensor& t) {
  if (!t.is_cuda()) return f.read(path, DType::F32, shape_of(t), t.raw());
  Tensor host = Tensor::empty(t.shape(), DType::F32);
  f.read(path, DType::F32, shape_of(t), host.raw());
  t.copy_from(host);
}

void write_nf4(H5File& f, const std::string& group, const NF4Weight& q) {
  f.write(group + "/packed", DType::U8, {static_cast<int64_t>(q.packed.size())}, q.packed.data());
  f.write(group + "/absmax_codes", DType::U8, {static_cast<int64_t>(q.absmax_codes.size())}, q.absmax_codes.data());
  f.write(group + "/absmax_scales", DType::F32, {static_cast<int64_t>(q.absmax_scales.size())},
          q.absmax_scales.data());
  f.set_int_attr(group, "rows", q.rows);
  f.set_int_attr(group, "cols", q.cols);
  f.set_double_attr(group, "absmax_offset", q.absmax_offset);
  f.set_int_attr(group, "blocksize", kNF4BlockSize);
  f.set_int_attr(group, "absmax_blocksize", kAbsmaxBlockSize);
}

}  // namespace

std::shared_ptr<NF4Weight> read_nf4_weight(const H5File& f, const std::string& group) {
  auto q = std::make_shared<NF4Weight>();
  q->rows = f.int_attr(group, "rows");
  q->cols = f.int_attr(group, "cols");
  q->absmax_offset = static_cast<float>(f.double_attr(group, "absmax_offset"));
  q->packed = f.read_vector<uint8_t>(group + "/packed");
  q->absmax_codes = f.read_vector<uint8_t>(group + "/absmax_codes");
  q->absmax_scales = f.read_vector<float>(group + "/absmax_scales");
  nf4_validate(*q, (f.path() + ":" + group).c_str());
  return q;
}

void write_model(H5File& f, HybridLM& model, ModelSaveMode mode) {
  // Which parameters belong to adapters or NF4 bases is decided per Linear.
  std::map<std::string, Linear*> linears;
  visit_linears(model, [&](const std::string& name, Linear& l) { linears[name] = &l; });
  bool any_adapter = false;
  for (auto& [name, l] : linears) {
    if (l->is_quantized() && mode == ModelSaveMode::Full) write_nf4(f, "/quantized/" + name + ".weight", *l->quantized());
    if (l->has_lora()) {
      MG_CHECK(!l->merged(), "[checkpoint] adapter of {} is merged: unmerge before saving, or save the merged model "
               "without adapters", name);
      write_tensor(f, "/adapter/" + name + ".lora_A", l->lora_A);
      write_tensor(f, "/adapter/" + name + ".lora_B", l->lora_B);
      if (!any_adapter) {
        const LoraSettings& s = l->lora_settings();
        f.create_group("/adapter");
        f.set_int_attr("/adapter", "r", s.r);
        f.set_double_attr("/adapter", "alpha", s.alpha);
        f.set_double_attr("/adapter", "dropout", s.dropout);
        f.set_int_attr("/adapter", "use_rslora", s.use_rslora ? 1 : 0);
        any_adapter = true;
      }
    }
  }
  if (model.embedding.is_quantized() && mode == ModelSaveMode::Full)
    write_nf4(f, "/quantized/embedding.weight", *model.embedding.quantized());
  model.visit_parameters([&](const std::string& name, Tensor& p) {
    if (p.is_meta()) return;  // an NF4 base or embedding: stored under /quantized
    if (name.ends_with(".lora_A") || name.ends_with(".lora_B")) return;  // under /adapter
    if (mode == ModelSaveMode::AdapterOnly && !p.requires_grad()) return;
    write_tensor(f, "/model/" + name, p);
  });
}

ModelLoadReport read_model(const H5File& f, HybridLM& model, bool require_all) {
  ModelLoadReport rep;
  std::map<std::string, Linear*> linears;
  visit_linears(model, [&](const std::string& name, Linear& l) { linears[name] = &l; });

  // NF4 weights first: they replace float weights, which then need no /model entry.
  bool nf4_embedding_in_file = false;
  if (f.is_group("/quantized")) {
    for (const std::string& wname : f.list("/quantized")) {
      if (wname == "embedding.weight") {
        model.embedding.set_quantized(read_nf4_weight(f, "/quantized/" + wname));
        nf4_embedding_in_file = true;
        ++rep.quantized;
        continue;
      }
      MG_CHECK(wname.ends_with(".weight"), "[checkpoint] {}: unexpected /quantized/{}", f.path(), wname);
      const std::string module = wname.substr(0, wname.size() - 7);
      auto it = linears.find(module);
      MG_CHECK(it != linears.end(), "[checkpoint] {}: /quantized/{} is not a linear layer of this model "
               "(does the config match the checkpoint's?)", f.path(), wname);
      if (it->second->weights_released()) continue;  // streamed from an expert store instead
      it->second->set_quantized(read_nf4_weight(f, "/quantized/" + wname));
      ++rep.quantized;
    }
  }
  // A float32 table in the file wins over an NF4 one the model made itself (apply_lora runs
  // before read_model when loading a run): a QLoRA checkpoint written with
  // qlora.quantize_embedding: false, or before the embedding could be NF4, loads as trained.
  if (model.embedding.is_quantized() && !nf4_embedding_in_file && f.exists("/model/embedding.weight"))
    model.embedding.dequantize();
  if (f.is_group("/adapter")) {
    for (const std::string& aname : f.list("/adapter")) {
      const bool is_a = aname.ends_with(".lora_A");
      MG_CHECK(is_a || aname.ends_with(".lora_B"), "[checkpoint] {}: unexpected /adapter/{}", f.path(), aname);
      const std::string module = aname.substr(0, aname.size() - 7);
      auto it = linears.find(module);
      MG_CHECK(it != linears.end() && it->second->has_lora(),
               "[checkpoint] {}: adapter {} has no matching LoRA layer in this model; set lora.enabled and "
               "lora.target_modules as in the run that wrote it", f.path(), aname);
      Tensor& t = is_a ? it->second->lora_A : it->second->lora_B;
      read_tensor(f, "/adapter/" + aname, t);
      rep.adapters += is_a;
    }
  }
  model.visit_parameters([&](const std::string& name, Tensor& p) {
    if (p.is_meta() || name.ends_with(".lora_A") || name.ends_with(".lora_B")) return;
    const std::string path = "/model/" + name;
    if (!f.exists(path)) {
      rep.missing.push_back(name);
      return;
    }
    MG_CHECK(p.dtype() == DType::F32, "[checkpoint] loading into a {} model is not supported", dtype_name(p.dtype()));
    read_tensor(f, path, p);
    ++rep.loaded;
  });
  if (require_all && !rep.missing.empty())
    throw Error(fmt::format("[checkpoint] {}: /model lacks {} parameter(s) of this model, first '{}'; is it a "
                            "checkpoint of the same architecture (model.* in the config)?",
                            f.path(), rep.missing.size(), rep.missing.front()));
  return rep;
}

}  // namespace mg
