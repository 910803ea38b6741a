// The merged key tree behind the config loader: reading YAML files, `extends:` chains,
// overrides, and the "did you mean" suggestions. Schema-free: config_schema.cpp gives the
// keys their meaning.
#include "experiments/config_tree.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "autograd/error.h"
#include "experiments/config_loader.h"
#include "util/regular_file.h"

namespace mg::config_detail {

namespace fs = std::filesystem;

const Entry* Entry::find(std::string_view child_key) const {
  for (const auto& c : children)
    if (c.key == child_key) return &c;
  return nullptr;
}

Entry* Entry::find(std::string_view child_key) {
  for (auto& c : children)
    if (c.key == child_key) return &c;
  return nullptr;
}

std::string where(const Entry& e) {
  return e.line > 0 ? fmt::format("{}:{}", e.source, e.line) : e.source;
}

Entry list_element(const Entry& list, size_t i) {
  Entry el;
  el.key = fmt::format("{}[{}]", list.key, i);
  el.path = fmt::format("{}[{}]", list.path, i);
  el.set_value(list.value()[i]);
  el.source = list.source;
  // Marks inside an override's value count from the override text, not a file: keep none.
  el.line = list.line > 0 && !el.value().Mark().is_null() ? el.value().Mark().line + 1 : 0;
  el.base_dir = list.base_dir;
  return el;
}

std::string describe(const YAML::Node& node) {
  if (!node.IsDefined() || node.IsNull()) return "null";
  if (node.IsSequence()) return fmt::format("a list of {}", node.size());
  if (node.IsMap()) return "a map";
  // yaml-cpp tags a quoted scalar "!" and a plain one "?": say which, since a quoted "512"
  // is a string, not a number.
  if (node.Tag() == "!") return fmt::format("the quoted string \"{}\"", node.Scalar());
  return fmt::format("'{}'", node.Scalar());
}

namespace {

std::string join_path(const std::string& parent, const std::string& key) {
  return parent.empty() ? key : parent + "." + key;
}

// A file name as the user would type it: relative to the current directory when below it.
std::string display_path(const fs::path& p) {
  std::error_code ec;
  fs::path rel = fs::proximate(p, ec);
  if (ec || rel.empty() || rel.string().rfind("..", 0) == 0) return p.string();
  return rel.string();
}

Entry build_entry(const YAML::Node& node, const std::string& key, const std::string& path,
                  const std::string& source, int line, bool in_file,
                  const std::string& base_dir) {
  Entry e;
  e.key = key;
  e.path = path;
  e.set_value(node);
  e.source = source;
  e.line = line;
  e.base_dir = base_dir;
  if (!node.IsMap()) return e;
  e.is_map = true;
  for (const auto& kv : node) {
    // Copies, not references: yaml-cpp's iterator value is a temporary proxy.
    const YAML::Node k = kv.first, v = kv.second;
    int key_line = in_file && !k.Mark().is_null() ? k.Mark().line + 1 : 0;
    std::string at = key_line > 0 ? fmt::format("{}:{}", source, key_line) : source;
    MG_CHECK(k.IsScalar(), "[config] {}: a key under '{}' is {}, not a name; keys are plain words",
             at, path.empty() ? "the top level" : path, describe(k));
    std::string child_key = k.Scalar();
    std::string child_path = join_path(path, child_key);
    MG_CHECK(e.find(child_key) == nullptr,
             "[config] {}: duplicate key '{}'; each key may appear once per map, remove one",
             at, child_path);
    e.children.push_back(
        build_entry(v, child_key, child_path, source, key_line, in_file, base_dir));
  }
  return e;
}

std::string chain_text(const std::vector<std::string>& chain, const std::string& last) {
  std::string s;
  for (const auto& c : chain) s += display_path(c) + " -> ";
  return s + display_path(last);
}

// The common part of reading a file or a text: build the tree, strip `extends:`, read the
// bases (in order; later ones win) and put this document's own keys on top of them.
Entry tree_from_document(const YAML::Node& doc, const std::string& source,
                         const std::string& base_dir, std::vector<std::string>& chain,
                         std::vector<std::string>& files_read) {
  Entry root;
  root.source = source;
  root.base_dir = base_dir;
  root.is_map = true;
  if (doc.IsDefined() && !doc.IsNull()) {
    MG_CHECK(doc.IsMap(),
             "[config] {}: the top level is {}; a config is a map of keys (experiment: ..., "
             "model: ...), see docs/config.md",
             source, describe(doc));
    root = build_entry(doc, "", "", source, 0, true, base_dir);
  }

  std::vector<Entry> bases;
  auto ext = std::find_if(root.children.begin(), root.children.end(),
                          [](const Entry& c) { return c.key == "extends"; });
  if (ext != root.children.end()) {
    Entry extends = std::move(*ext);
    root.children.erase(ext);
    std::vector<Entry> names;
    if (extends.value().IsScalar()) {
      names.push_back(extends);
    } else if (extends.value().IsSequence()) {
      for (size_t i = 0; i < extends.value().size(); ++i)
        names.push_back(list_element(extends, i));
    } else {
      MG_CHECK(extends.value().IsNull(),
               "[config] {}: extends: expected a file path or a list of file paths, got {}",
               where(extends), describe(extends.value()));
    }
    for (const Entry& name : names) {
      MG_CHECK(name.value().IsScalar() && !name.value().Scalar().empty(),
               "[config] {}: {}: expected a file path, got {}", where(name), name.path,
               describe(name.value()));
      fs::path p = name.value().Scalar();
      if (p.is_relative()) p = (base_dir.empty() ? fs::current_path() : fs::path(base_dir)) / p;
      // Canonical (symlinks resolved), so that a cycle through a link is still seen as one.
      p = fs::weakly_canonical(fs::absolute(p));
      MG_CHECK(std::find(chain.begin(), chain.end(), p.string()) == chain.end(),
               "[config] {}: extends cycle: {}; a file cannot extend itself, directly or not",
               where(name), chain_text(chain, p.string()));
      require_regular_file(p.string(), fmt::format("[config] {}: extends:", where(name)));
      MG_CHECK(fs::is_regular_file(p),
               "[config] {}: extends '{}': no such file (looked for {}); paths in extends are "
               "relative to the file that names them",
               where(name), name.value().Scalar(), p.string());
      bases.push_back(load_file_tree(p.string(), chain, files_read));
    }
  }

  if (bases.empty()) return root;
  Entry merged = std::move(bases.front());
  for (size_t i = 1; i < bases.size(); ++i) merge_into(merged, std::move(bases[i]));
  merge_into(merged, std::move(root));
  merged.source = source;  // the document itself, not its first base, names the whole
  merged.line = 0;
  merged.base_dir = base_dir;
  return merged;
}

YAML::Node parse_yaml(const std::string& text, const std::string& source) {
  try {
    return YAML::Load(text);
  } catch (const YAML::ParserException& ex) {
    throw Error(fmt::format("[config] {}:{}: YAML syntax error: {}; fix the file (indentation "
                            "is spaces, 'key: value' needs the space after ':')",
                            source, ex.mark.line + 1, ex.msg));
  }
}

}  // namespace

Entry load_file_tree(const std::string& path, std::vector<std::string>& chain,
                     std::vector<std::string>& files_read) {
  fs::path abs = fs::absolute(fs::path(path)).lexically_normal();
  std::string source = display_path(abs);
  require_regular_file(path, "[config]");  // a FIFO would block the open below forever
  std::ifstream in(abs, std::ios::binary);
  MG_CHECK(in.good() && fs::is_regular_file(abs),
           "[config] cannot read config file '{}' (looked for {}); check the path", path,
           abs.string());
  std::stringstream buf;
  buf << in.rdbuf();
  YAML::Node doc = parse_yaml(buf.str(), source);
  chain.push_back(fs::weakly_canonical(abs).string());
  files_read.push_back(source);
  Entry tree = tree_from_document(doc, source, abs.parent_path().string(), chain, files_read);
  chain.pop_back();
  return tree;
}

Entry load_text_tree(std::string_view text, const std::string& source_name,
                     const std::string& base_dir, std::vector<std::string>& chain,
                     std::vector<std::string>& files_read) {
  YAML::Node doc = parse_yaml(std::string(text), source_name);
  return tree_from_document(doc, source_name, base_dir, chain, files_read);
}

void merge_into(Entry& base, Entry over) {
  if (base.is_map && over.is_map) {
    for (auto& child : over.children) {
      if (Entry* existing = base.find(child.key))
        merge_into(*existing, std::move(child));
      else
        base.children.push_back(std::move(child));
    }
    return;
  }
  if (base.is_map && over.value().IsNull()) return;  // "lora:" with nothing under it
  base = std::move(over);
}

int edit_distance(std::string_view a, std::string_view b) {
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<int>> d(n + 1, std::vector<int>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = static_cast<int>(i);
  for (size_t j = 0; j <= m; ++j) d[0][j] = static_cast<int>(j);
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      int cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[n][m];
}

std::string nearest_key(const std::string& unknown, const std::vector<std::string>& known_paths) {
  auto split = [](const std::string& p) {
    size_t dot = p.rfind('.');
    return dot == std::string::npos ? std::pair<std::string, std::string>{"", p}
                                     : std::pair{p.substr(0, dot), p.substr(dot + 1)};
  };
  auto [parent, leaf] = split(unknown);
  // Close enough to be a typo: about one edit per three characters of the key's name, so
  // "alpah" -> "alpha" and "model.lr" -> "optimizer.lr" (same name, another section).
  const int threshold = std::clamp(static_cast<int>(leaf.size()) / 3 + 1, 1, 3);
  std::string best;
  int best_score = threshold + 1;
  bool best_same_parent = false;
  for (const auto& k : known_paths) {
    auto [k_parent, k_leaf] = split(k);
    bool same_parent = k_parent == parent;
    int score = std::min(edit_distance(unknown, k),
                         edit_distance(leaf, k_leaf) + (same_parent ? 0 : 1));
    if (score < best_score || (score == best_score && same_parent && !best_same_parent)) {
      best = k, best_score = score, best_same_parent = same_parent;
    }
  }
  return best;
}

void apply_override(Entry& root, const std::string& override_text,
                    const std::vector<std::string>& known_paths) {
  auto [key, value_text] = split_override(override_text);
  const std::string source = fmt::format("override '{}'", override_text);
  MG_CHECK(key != "extends",
           "[config] {}: extends cannot be overridden; name the base file in the YAML instead",
           source);
  if (std::find(known_paths.begin(), known_paths.end(), key) == known_paths.end()) {
    std::string near = nearest_key(key, known_paths);
    throw Error(fmt::format("[config] {}: unknown key '{}'{}; see docs/config.md for the keys",
                            source, key,
                            near.empty() ? "" : fmt::format(" (did you mean '{}'?)", near)));
  }
  YAML::Node value;
  try {
    value = YAML::Load(value_text);
  } catch (const YAML::ParserException& ex) {
    throw Error(fmt::format("[config] {}: the value is not valid YAML ({}); quote it, e.g. "
                            "{}='\"...\"'",
                            source, ex.msg, key));
  }
  // Walk (creating sections as needed) to the parent of the key, then merge the value there.
  Entry* node = &root;
  std::string path;
  size_t start = 0;
  while (true) {
    size_t dot = key.find('.', start);
    std::string part = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    path = join_path(path, part);
    Entry* child = node->find(part);
    if (dot == std::string::npos) {
      Entry leaf = build_entry(value, part, path, source, 0, false, fs::current_path().string());
      if (child)
        merge_into(*child, std::move(leaf));
      else
        node->children.push_back(std::move(leaf));
      return;
    }
    if (!child) {
      node->children.push_back(Entry{});
      child = &node->children.back();
      child->key = part;
      child->path = path;
    }
    if (!child->is_map) {  // a section given as a scalar in the file: the override replaces it
      child->is_map = true;
      child->children.clear();
      child->set_value(YAML::Node(YAML::NodeType::Map));
      child->source = source;
      child->line = 0;
    }
    node = child;
    start = dot + 1;
  }
}

}  // namespace mg::config_detail

namespace mg {

std::pair<std::string, std::string> split_override(const std::string& override_text) {
  size_t eq = override_text.find('=');
  MG_CHECK(eq != std::string::npos && eq > 0,
           "[config] override '{}': expected key.sub=value (e.g. lora.r=8 or "
           "data.path=[a.txt, b.txt])",
           override_text);
  std::string key = override_text.substr(0, eq);
  key.erase(0, key.find_first_not_of(" \t"));
  key.erase(key.find_last_not_of(" \t") + 1);
  bool ok = !key.empty() && key.front() != '.' && key.back() != '.' &&
            key.find("..") == std::string::npos;
  for (char ch : key)
    ok = ok && (std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '.');
  MG_CHECK(ok,
           "[config] override '{}': '{}' is not a key path; expected words joined by dots, "
           "e.g. lora.r=8",
           override_text, key);
  return {key, override_text.substr(eq + 1)};
}

}  // namespace mg
