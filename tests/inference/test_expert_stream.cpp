// Expert streaming against the resident model: the store holds the checkpoint's experts byte
// for byte, and generation / evaluation with streamed experts gives the same logits and tokens
// as with every expert in memory, whatever the cache size, prefetch or I/O mode. Plus the
// errors a user can run into (wrong, damaged or stale store; cache too small; adapters).
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "autograd/half.h"
#include "autograd/tape.h"
#include "checkpoints/atomic_save.h"
#include "checkpoints/h5_file.h"
#include "checkpoints/model_io.h"
#include "experiments/config_loader.h"
#include "inference/expert_store.h"
#include "inference/expert_stream.h"
#include "inference/generate.h"
#include "inference/load_model.h"
#include "model/lora.h"
#include "trainer/checkpoint_state.h"

namespace fs = std::filesystem;

namespace mg {
namespace {

// A directory for this test's files, removed at the end.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name)
      : path(fs::temp_directory_path() / ("magellan_test_" + name + "_" + std::to_string(::getpid()))) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string operator/(const std::string& f) const { return (path / f).string(); }
};

// A read chunk, aligned as O_DIRECT wants.
struct AlignedBuffer {
  explicit AlignedBuffer(int64_t bytes) : p(std::aligned_alloc(kExpertStoreAlign, static_cast<size_t>(bytes))) {}
  ~AlignedBuffer() { std::free(p); }
  void* get() const { return p; }
  void* p;
};

ExperimentConfig tiny_config(ExpertMlp mlp = ExpertMlp::Gelu) {
  ExperimentConfig c;
  c.experiment = "stream";
  c.model.d_model = 64;
  c.model.vocab_size = 40;
  c.model.layer_pattern = "MEME";  // MoE at layers 1 and 3
  c.model.d_state = 8;
  c.model.n_experts = 8;
  c.model.top_k = 2;
  c.model.expert_hidden = 96;      // 96*64 = 6144 elements: 96 NF4 blocks, not a multiple of 256
  c.model.expert_mlp = mlp;
  c.data.n_tokens = 16;
  return c;
}

// Writes a checkpoint of a freshly initialized model; with `nf4_experts`, expert Linears are
// stored quantized (/quantized), as a QLoRA base or `magellan quantize` would.
void write_checkpoint(const std::string& path, const ExperimentConfig& cfg, bool nf4_experts, int64_t step = 7,
                      uint64_t seed = 11) {
  HybridLM model(cfg.model);
  model.init(seed);
  if (nf4_experts)
    visit_linears(model, [](const std::string& name, Linear& l) {
      if (name.find(".experts.") != std::string::npos) l.quantize_base();
    });
  TrainState st;
  st.step = step;
  atomic_save(path, [&](H5File& f) {
    write_checkpoint_header(f, st, to_yaml(cfg), "full", std::nullopt);
    write_model(f, model, ModelSaveMode::Full);
  });
}

std::optional<ExpertStreamRequest> streaming(const std::string& store, double cache_experts, bool prefetch = true,
                                             bool direct = false, int64_t one_expert_bytes = 0) {
  ExpertStreamRequest r;
  r.store = store;
  r.direct_io = direct;
  r.options.cache_bytes = static_cast<int64_t>(cache_experts * static_cast<double>(one_expert_bytes));
  r.options.prefetch = prefetch;
  return r;
}

// Logits of every decode step, flattened: prompt then greedy continuation.
std::vector<float> decode_logits(const HybridLM& model, const std::vector<int32_t>& prompt, int n_new) {
  NoGradGuard ng;
  HybridLM::DecodeState state;
  std::vector<float> all;
  Tensor logits;
  int32_t next = 0;
  for (int i = 0; i < static_cast<int>(prompt.size()) + n_new; ++i) {
    const int32_t tok = i < static_cast<int>(prompt.size()) ? prompt[i] : next;
    logits = model.decode_step(Tensor::from_ids({tok}, {1}), state);
    const float* p = logits.data<float>();
    all.insert(all.end(), p, p + logits.numel());
    next = static_cast<int32_t>(std::max_element(p, p + logits.numel()) - p);
  }
  return all;
}

TEST(ExpertStore, Nf4RecordsHoldTheCheckpointsExpertsByteForByte) {
  TempDir dir("store_nf4");
  const ExperimentConfig cfg = tiny_config(ExpertMlp::Swiglu);
  write_checkpoint(dir / "c.h5", cfg, /*nf4_experts=*/true);
  const ExportReport rep = export_expert_store(dir / "c.h5", dir / "c.experts", ExpertPayload::NF4, true);
  EXPECT_EQ(rep.experts, 2 * 8);
  EXPECT_FALSE(rep.quantized);
  EXPECT_EQ(default_expert_store_path(dir / "c.h5"), dir / "c.experts");

  for (bool direct : {false, true}) {
  SCOPED_TRACE(direct ? "O_DIRECT" : "buffered");
  std::unique_ptr<ExpertStore> opened;
  try {
    opened = std::make_unique<ExpertStore>(dir / "c.experts", direct);
  } catch (const Error&) {
    if (direct) continue;  // a file system without O_DIRECT (tmpfs)
    throw;
  }
  const ExpertStore& store = *opened;
  store.check_matches(cfg.model);
  EXPECT_EQ(store.source().step, 7);
  H5File f = H5File::open_read(dir / "c.h5");
  // One expert reused for every record (as the cache recycles them); chunks from one block (the
  // arrays straddle many chunks) to more than a record.
  std::shared_ptr<Expert> ex = store.new_expert(cfg.model.expert_mlp);
  for (const ExpertStoreEntry& en : store.entries()) {
    EXPECT_EQ(en.offset % kExpertStoreAlign, 0);
    const int64_t chunk = en.expert % 2 ? kExpertStoreAlign : ExpertStore::kReadChunkBytes;
    AlignedBuffer buf(chunk);
    store.read_into(en, *ex, buf.get(), chunk);
    const std::string prefix = fmt::format("/quantized/layers.{}.mixer.experts.{}.", en.layer, en.expert);
    const std::pair<const char*, Linear*> mats[] = {{"up", &ex->up}, {"down", &ex->down}, {"gate", ex->gate.get()}};
    for (auto [name, lin] : mats) {
      auto want = read_nf4_weight(f, prefix + name + ".weight");
      const NF4Weight& got = *lin->quantized();
      EXPECT_EQ(got.rows, want->rows);
      EXPECT_EQ(got.cols, want->cols);
      EXPECT_EQ(got.packed, want->packed) << prefix << name;
      EXPECT_EQ(got.absmax_codes, want->absmax_codes);
      EXPECT_EQ(got.absmax_scales, want->absmax_scales);
      EXPECT_EQ(got.absmax_offset, want->absmax_offset);
    }
  }
  }
}

TEST(ExpertStore, F16PayloadRoundsTheFloatExperts) {
  TempDir dir("store_f16");
  const ExperimentConfig cfg = tiny_config();
  write_checkpoint(dir / "c.h5", cfg, /*nf4_experts=*/false);
  export_expert_store(dir / "c.h5", dir / "c.experts", ExpertPayload::F16, true);
  ExpertStore store(dir / "c.experts", false);
  H5File f = H5File::open_read(dir / "c.h5");
  const ExpertStoreEntry& en = store.entry(3, 5);
  AlignedBuffer buf(kExpertStoreAlign);  // a record spans several chunks
  auto ex = store.new_expert(cfg.model.expert_mlp);
  store.read_into(en, *ex, buf.get(), kExpertStoreAlign);
  const auto want = f.read_vector<float>("/model/layers.3.mixer.experts.5.down.weight");
  const float* got = ex->down.weight.data<float>();
  ASSERT_EQ(ex->down.weight.numel(), static_cast<int64_t>(want.size()));
  for (size_t i = 0; i < want.size(); ++i)  // half has an 11-bit significand: relative error <= 2^-11
    ASSERT_LE(std::abs(got[i] - want[i]), std::ldexp(std::abs(want[i]), -11) + 1e-7f) << i;
  EXPECT_EQ(store.decoded_bytes(), 4 * 2 * 64 * 96);
}

// The heart of it: streamed == resident, bit for bit, for decode and for the batched forward.
TEST(ExpertStream, DecodeLogitsAndTokensEqualTheResidentModel) {
  TempDir dir("stream_identity");
  const ExperimentConfig cfg = tiny_config();
  write_checkpoint(dir / "c.h5", cfg, /*nf4_experts=*/true);
  export_expert_store(dir / "c.h5", dir / "c.experts", ExpertPayload::NF4, true);
  const int64_t one = ExpertStore(dir / "c.experts", false).decoded_bytes();

  LoadedModel resident = load_model_from_checkpoint(dir / "c.h5");
  const std::vector<int32_t> prompt{3, 1, 4, 1, 5, 9, 2, 6};
  const std::vector<float> want = decode_logits(*resident.model, prompt, 24);
  SamplingOptions s;
  s.temperature = 0.9;
  s.seed = 5;
  const GenerateResult want_gen = generate(*resident.model, prompt, 24, s, std::nullopt);
  // generate() prefills the prompt in one batched pass: each MoE layer acquires the distinct
  // experts the prompt's tokens route to, once.
  int64_t prefill_requests = 0;
  {
    NoGradGuard no_grad;
    const int64_t P = static_cast<int64_t>(prompt.size());
    for (const RoutingStats& r : resident.model->forward(Tensor::from_ids(prompt, {1, P}), Tensor()).routing)
      for (int64_t n : r.tokens_per_expert) prefill_requests += n > 0;
  }

  struct Case {
    double cache_experts;
    bool prefetch, direct;
  };
  for (Case c : {Case{2, false, false}, Case{2, true, false}, Case{5, true, false}, Case{16, true, false},
                 Case{3, true, true}}) {
    SCOPED_TRACE(fmt::format("cache {} experts, prefetch {}, direct {}", c.cache_experts, c.prefetch, c.direct));
    std::optional<LoadedModel> lm;
    try {
      lm.emplace(load_model_from_checkpoint(dir / "c.h5", {},
                                            streaming(dir / "c.experts", c.cache_experts, c.prefetch, c.direct, one)));
    } catch (const Error& e) {
      if (c.direct && std::string(e.what()).find("O_DIRECT") != std::string::npos)
        continue;  // a file system without direct I/O (tmpfs): nothing to compare there
      throw;
    }
    EXPECT_EQ(decode_logits(*lm->model, prompt, 24), want);  // exact: same kernels, same weights
    EXPECT_EQ(generate(*lm->model, prompt, 24, s, std::nullopt).tokens, want_gen.tokens);
    const ExpertStreamStats st = lm->experts->stats();
    EXPECT_EQ(st.hits + st.prefetch_hits + st.misses, st.requests);
    // 2 MoE layers x top-2 x decode steps: 8 + 24 here, 23 in generate (no step after the
    // last), plus generate's prefill
    EXPECT_EQ(st.requests, 2 * 2 * (8 + 24 + 23) + prefill_requests);
    EXPECT_LE(st.peak_cache_bytes, static_cast<int64_t>(c.cache_experts) * one);
    const int64_t record = lm->experts->store().entries()[0].bytes;  // buffered reads skip the padding
    EXPECT_EQ(st.bytes_read, st.reads * (c.direct ? (record + 4095) / 4096 * 4096 : record));
    if (c.prefetch) {
      EXPECT_GT(st.prefetch_hits, 0);
    } else {
      EXPECT_EQ(st.prefetches, 0);
    }
    if (c.cache_experts >= 16) {
      EXPECT_EQ(st.reads, 16);  // everything fits: each expert read once
    } else {
      EXPECT_GT(st.evictions, 0);
    }
  }
}

// Decoding visits the MoE layers in a cycle; with fewer cache slots than the experts a token
// touches, LRU evicts exactly what comes back first and finds nothing cached. The cache's
// farthest-next-use rule keeps a stable set resident instead.
TEST(ExpertStream, EvictionKeepsExpertsOnACycleLongerThanTheCache) {
  TempDir dir("stream_eviction");
  ExperimentConfig cfg = tiny_config();
  cfg.model.layer_pattern = "MEEEE";  // 4 MoE layers: with 2, LRU and this rule coincide
  write_checkpoint(dir / "c.h5", cfg, /*nf4_experts=*/true);
  export_expert_store(dir / "c.h5", dir / "c.experts", ExpertPayload::NF4, true);
  const int64_t one = ExpertStore(dir / "c.experts", false).decoded_bytes();
  // 5 slots; a token touches 4 layers x 2 experts = 8.
  LoadedModel lm = load_model_from_checkpoint(dir / "c.h5", {}, streaming(dir / "c.experts", 5, false, false, one));
  decode_logits(*lm.model, {1, 2, 3}, 60);
  const ExpertStreamStats st = lm.experts->stats();
  // About 3 of the 32 experts stay resident for good (plus repeats of the same layer's choice);
  // LRU evicts each before its layer comes back.
  EXPECT_GT(st.hits, st.requests / 8) << st.summary();
}

TEST(ExpertStream, BatchedForwardLossEqualsTheResidentModelWithACacheSmallerThanALayer) {
  TempDir dir("stream_forward");
  const ExperimentConfig cfg = tiny_config(ExpertMlp::Swiglu);
  write_checkpoint(dir / "c.h5", cfg, /*nf4_experts=*/true);
  export_expert_store(dir / "c.h5", dir / "c.experts", ExpertPayload::NF4, true);
  const int64_t one = ExpertStore(dir / "c.experts", false).decoded_bytes();
  LoadedModel resident = load_model_from_checkpoint(dir / "c.h5");
  LoadedModel streamed = load_model_from_checkpoint(dir / "c.h5", {}, streaming(dir / "c.experts", 3, true, false, one));
  std::vector<int32_t> ids;
  for (int i = 0; i < 2 * 24; ++i) ids.push_back((i * 7 + 3) % 40);
  const Tensor tokens = Tensor::from_ids(ids, {2, 24});
  const Tensor targets = Tensor::from_ids(std::vector<int32_t>(ids.rbegin(), ids.rend()), {2, 24});
  NoGradGuard ng;
  const LmOutput a = resident.model->forward(tokens, targets);
  const LmOutput b = streamed.model->forward(tokens, targets);  // 48 tokens use all 8 experts, 3 at a time
  EXPECT_EQ(a.loss.item(), b.loss.item());
  const std::vector<float> la(a.logits.data<float>(), a.logits.data<float>() + a.logits.numel());
  const std::vector<float> lb(b.logits.data<float>(), b.logits.data<float>() + b.logits.numel());
  EXPECT_EQ(la, lb);
  EXPECT_LE(streamed.experts->stats().peak_cache_bytes, 3 * one);
}

TEST(ExpertStream, StreamedModelHoldsNoExpertWeights) {
  TempDir dir("stream_memory");
  const ExperimentConfig cfg = tiny_config();
  write_checkpoint(dir / "c.h5", cfg, /*nf4_experts=*/true);
  export_expert_store(dir / "c.h5", dir / "c.experts", ExpertPayload::NF4, true);
  LoadedModel lm = load_model_from_checkpoint(dir / "c.h5", {}, streaming(dir / "c.experts", 0));  // default cache
  int experts_seen = 0;
  visit_linears(*lm.model, [&](const std::string& name, Linear& l) {
    if (name.find(".experts.") == std::string::npos) return;
    ++experts_seen;
    EXPECT_TRUE(l.weights_released()) << name;
    EXPECT_TRUE(l.weight.is_meta() && !l.is_quantized()) << name;
  });
  EXPECT_EQ(experts_seen, 2 * 8 * 2);
  // Default budget: a quarter of 16 experts = 4, which is also >= 2 * top_k.
  EXPECT_EQ(lm.experts->max_acquire(), 4);
}

// --- errors -------------------------------------------------------------------------------------

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(ExpertStore, DamagedOrForeignStoresAreRefusedWithTheReason) {
  TempDir dir("store_errors");
  const ExperimentConfig cfg = tiny_config();
  write_checkpoint(dir / "c.h5", cfg, true);
  export_expert_store(dir / "c.h5", dir / "c.experts", ExpertPayload::NF4, true);

  fs::copy_file(dir / "c.experts", dir / "short.experts");
  fs::resize_file(dir / "short.experts", fs::file_size(dir / "c.experts") - 4096);
  EXPECT_NE(error_of([&] { ExpertStore s(dir / "short.experts", false); }).find("truncated"), std::string::npos);

  fs::copy_file(dir / "c.experts", dir / "magic.experts");
  {
    std::fstream io(dir / "magic.experts", std::ios::in | std::ios::out | std::ios::binary);
    io.write("NOTSTORE", 8);
  }
  EXPECT_NE(error_of([&] { ExpertStore s(dir / "magic.experts", false); }).find("not a magellan expert store"),
            std::string::npos);
  EXPECT_NE(error_of([&] { ExpertStore s(dir / "missing.experts", false); }).find("cannot open"), std::string::npos);

  // A different architecture.
  ExperimentConfig wide = cfg;
  wide.model.expert_hidden = 128;
  EXPECT_NE(error_of([&] { ExpertStore(dir / "c.experts", false).check_matches(wide.model); }).find("expert_hidden"),
            std::string::npos);

  // The same architecture, another checkpoint (a later step): stale store.
  write_checkpoint(dir / "later.h5", cfg, true, /*step=*/9);
  const std::string stale = error_of([&] { load_model_from_checkpoint(dir / "later.h5", {}, streaming(dir / "c.experts", 0)); });
  EXPECT_NE(stale.find("was exported from"), std::string::npos) << stale;
  EXPECT_NE(stale.find("export-experts"), std::string::npos) << stale;

  // No store at the default path: says how to make one.
  const std::string none = error_of([&] { load_model_from_checkpoint(dir / "later.h5", {}, streaming("", 0)); });
  EXPECT_NE(none.find("magellan export-experts"), std::string::npos) << none;

  // A cache smaller than top_k experts.
  const int64_t one = ExpertStore(dir / "c.experts", false).decoded_bytes();
  const std::string small = error_of([&] { load_model_from_checkpoint(dir / "c.h5", {}, streaming(dir / "c.experts", 1.5, true, false, one)); });
  EXPECT_NE(small.find("top_k = 2 needs at least"), std::string::npos) << small;
}

// Flips one bit of the byte at `offset` of `path`.
void flip_byte(const std::string& path, int64_t offset) {
  std::fstream io(path, std::ios::in | std::ios::out | std::ios::binary);
  io.seekg(offset);
  char c = 0;
  io.read(&c, 1);
  io.seekp(offset);
  c = static_cast<char>(c ^ 0x04);
  io.write(&c, 1);
  ASSERT_TRUE(io.good()) << path;
}

// One flipped byte inside an expert's record: every way of reading that expert (buffered or
// O_DIRECT, nf4 or f16, any chunk size, the stream's cache, --verify's check) refuses it with
// the file, layer and expert named; the other experts still load.
TEST(ExpertStore, ADamagedRecordIsRefusedNamingTheExpert) {
  TempDir dir("store_crc");
  const ExperimentConfig cfg = tiny_config(ExpertMlp::Swiglu);
  write_checkpoint(dir / "c.h5", cfg, /*nf4_experts=*/true);
  for (ExpertPayload payload : {ExpertPayload::NF4, ExpertPayload::F16}) {
    SCOPED_TRACE(expert_payload_name(payload));
    const std::string store_path = dir / (std::string("d_") + expert_payload_name(payload) + ".experts");
    export_expert_store(dir / "c.h5", store_path, payload, true);
    const ExpertStoreEntry bad = ExpertStore(store_path, false).entry(3, 5);
    flip_byte(store_path, bad.offset + bad.bytes / 2 + 1);  // inside the payload, not the padding

    for (bool direct : {false, true}) {
      SCOPED_TRACE(direct ? "O_DIRECT" : "buffered");
      std::shared_ptr<ExpertStore> store;
      try {
        store = std::make_shared<ExpertStore>(store_path, direct);
      } catch (const Error&) {
        if (direct) continue;  // a file system without O_DIRECT (tmpfs)
        throw;
      }
      std::shared_ptr<Expert> ex = store->new_expert(cfg.model.expert_mlp);
      for (int64_t chunk : {kExpertStoreAlign, ExpertStore::kReadChunkBytes}) {
        AlignedBuffer buf(chunk);
        const std::string err = error_of([&] { store->read_into(store->entry(3, 5), *ex, buf.get(), chunk); });
        EXPECT_NE(err.find(store_path + ": expert 5 of layer 3 is damaged"), std::string::npos) << err;
        EXPECT_NE(err.find("magellan export-experts"), std::string::npos) << err;
        const std::string verr = error_of([&] { store->verify(store->entry(3, 5), buf.get(), chunk); });
        EXPECT_NE(verr.find("expert 5 of layer 3 is damaged"), std::string::npos) << verr;
        for (const ExpertStoreEntry& en : store->entries()) {  // every other expert is intact
          if (en.layer == 3 && en.expert == 5) continue;
          EXPECT_NO_THROW(store->read_into(en, *ex, buf.get(), chunk)) << en.layer << " " << en.expert;
          EXPECT_NO_THROW(store->verify(en, buf.get(), chunk)) << en.layer << " " << en.expert;
        }
      }
      // Through the stream's cache: the damaged expert is an error (again on a retry), its
      // neighbours load.
      ExpertStreamOptions opts;
      opts.cache_bytes = 4 * store->decoded_bytes();
      ExpertStream stream(store, cfg.model, opts);
      const int32_t damaged[] = {4, 5}, fine[] = {4, 6};
      for (int attempt = 0; attempt < 2; ++attempt) {
        const std::string err = error_of([&] { stream.acquire(3, damaged); });
        EXPECT_NE(err.find("expert 5 of layer 3 is damaged"), std::string::npos) << err;
      }
      EXPECT_EQ(stream.acquire(3, fine).size(), 2u);
      EXPECT_EQ(stream.acquire(1, damaged).size(), 2u);  // expert 5 of layer 1 is another record
    }
  }
}

// A store of format version 1 (no checksums) is refused with the way out.
TEST(ExpertStore, AStoreWithoutChecksumsIsRefused) {
  TempDir dir("store_v1");
  const ExperimentConfig cfg = tiny_config();
  write_checkpoint(dir / "c.h5", cfg, true);
  export_expert_store(dir / "c.h5", dir / "c.experts", ExpertPayload::NF4, true);
  {
    std::fstream io(dir / "c.experts", std::ios::in | std::ios::out | std::ios::binary);
    io.seekp(8);  // the version, after the magic
    const uint32_t v1 = 1;
    io.write(reinterpret_cast<const char*>(&v1), 4);
  }
  const std::string err = error_of([&] { ExpertStore s(dir / "c.experts", false); });
  EXPECT_NE(err.find("format version 1 is older than this build's 2"), std::string::npos) << err;
  EXPECT_NE(err.find("export it again with: magellan export-experts"), std::string::npos) << err;
}

TEST(ExpertStore, AFailedExportLeavesTheExistingStoreIntact) {
  TempDir dir("store_atomic");
  const ExperimentConfig cfg = tiny_config();
  write_checkpoint(dir / "c.h5", cfg, true);
  export_expert_store(dir / "c.h5", dir / "c.experts", ExpertPayload::NF4, true);
  const auto before = fs::file_size(dir / "c.experts");
  // A checkpoint that lacks the last expert's weights: the export fails midway.
  {
    HybridLM model(cfg.model);
    model.init(11);
    model.layers[3]->moe->experts[7]->release_weights();  // meta: write_model skips it
    atomic_save(dir / "broken.h5", [&](H5File& f) {
      write_checkpoint_header(f, TrainState{}, to_yaml(cfg), "full", std::nullopt);
      write_model(f, model, ModelSaveMode::Full);
    });
  }
  const std::string err = error_of([&] { export_expert_store(dir / "broken.h5", dir / "c.experts", ExpertPayload::NF4, true); });
  EXPECT_NE(err.find("untouched"), std::string::npos) << err;
  EXPECT_NE(err.find("experts.7.up.weight"), std::string::npos) << err;
  EXPECT_EQ(fs::file_size(dir / "c.experts"), before);
  ExpertStore ok(dir / "c.experts", false);  // still opens
  EXPECT_EQ(ok.entries().size(), 16u);
  for (const auto& e : fs::directory_iterator(dir.path))  // no temp file left behind
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << e.path();
}

TEST(ExpertStream, AdaptersOnExpertsMustBeMergedFirst) {
  TempDir dir("stream_lora");
  ExperimentConfig cfg = tiny_config();
  HybridLM model(cfg.model);
  model.init(3);
  cfg.lora.enabled = true;
  cfg.lora.target_modules = {"experts.*.up"};
  apply_lora(model, cfg.lora, cfg.qlora, 1);
  TrainState st;
  atomic_save(dir / "c.h5", [&](H5File& f) {
    write_checkpoint_header(f, st, to_yaml(cfg), "full", std::nullopt);
    write_model(f, model, ModelSaveMode::Full);
  });
  const std::string err = error_of([&] { export_expert_store(dir / "c.h5", dir / "c.experts", ExpertPayload::NF4, true); });
  EXPECT_NE(err.find("merge-lora"), std::string::npos) << err;
}

}  // namespace
}  // namespace mg
