// load_config / to_yaml: files -> merged key tree (config_tree.cpp) -> overrides -> unknown
// keys -> typed fields (config_schema.cpp) -> cross-field checks (config_validate.cpp).
#include "experiments/config_loader.h"

#include <algorithm>

#include "autograd/error.h"
#include "experiments/config_schema.h"
#include "experiments/config_tree.h"

namespace mg {

namespace {

using config_detail::Entry;

// Field paths and section names: every dotted path a user may name.
std::vector<std::string> known_paths() {
  std::vector<std::string> out = config_key_paths();
  for (const auto& s : config_detail::config_sections()) out.push_back(s);
  return out;
}

bool is_section(const std::string& path) {
  const auto sections = config_detail::config_sections();
  return std::find(sections.begin(), sections.end(), path) != sections.end();
}

std::string keys_of_section(const std::string& section) {
  std::string out;
  for (const auto& f : config_detail::config_fields()) {
    size_t dot = f.path.find('.');
    std::string owner = dot == std::string::npos ? "" : f.path.substr(0, dot);
    if (owner != section) continue;
    out += (out.empty() ? "" : ", ") + f.path.substr(dot == std::string::npos ? 0 : dot + 1);
  }
  return out;
}

// Unknown keys are errors (a typo silently falling back to a default is the worst outcome).
void check_known_keys(const Entry& node, const std::vector<std::string>& known) {
  for (const Entry& child : node.children) {
    if (is_section(child.path)) {
      MG_CHECK(child.is_map || child.value().IsNull(),
               "[config] {}: {}: expected a map of {} keys ({}), got {}",
               config_detail::where(child), child.path, child.path, keys_of_section(child.path),
               config_detail::describe(child.value()));
      check_known_keys(child, known);
      continue;
    }
    // "model.d_model: 64" in a file: the dotted form is for overrides only.
    size_t dot = child.key.find('.');
    MG_CHECK(dot == std::string::npos,
             "[config] {}: key '{}' has a dot; in a YAML file keys are nested, so write "
             "'{}:' and then '  {}: ...' indented on the next line (dotted keys are for "
             "command-line overrides)",
             config_detail::where(child), child.key, child.key.substr(0, dot),
             child.key.substr(dot + 1));
    if (std::find(known.begin(), known.end(), child.path) != known.end()) continue;
    std::string near = config_detail::nearest_key(child.path, known);
    std::string section = node.path;
    throw Error(fmt::format(
        "[config] {}: unknown key '{}'{}; valid keys {}: {}", config_detail::where(child),
        child.path, near.empty() ? "" : fmt::format(" (did you mean '{}'?)", near),
        section.empty() ? "at the top level" : "in '" + section + "'",
        section.empty() ? "experiment, extends, run_dir, seed, threads, model, lora, qlora, "
                          "optimizer, scheduler, data, training, eval, checkpoint, logging"
                        : keys_of_section(section)));
  }
}

const Entry* lookup(const Entry& root, const std::string& path) {
  const Entry* node = &root;
  size_t start = 0;
  while (node) {
    size_t dot = path.find('.', start);
    node = node->find(path.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) return node;
    start = dot + 1;
  }
  return nullptr;
}

LoadedConfig finish(Entry root, std::vector<std::string> files,
                    const std::vector<std::string>& overrides) {
  const auto known = known_paths();
  for (const auto& o : overrides) config_detail::apply_override(root, o, known);
  check_known_keys(root, known);

  LoadedConfig out;
  for (const auto& field : config_detail::config_fields())
    if (const Entry* e = lookup(root, field.path)) field.read(*e, out.config);

  const std::string root_source = root.source;
  config_detail::check_cross_fields(out.config, [&](const std::string& path) {
    const Entry* e = lookup(root, path);
    return e ? config_detail::where(*e) : root_source + " (" + path + " not set: default)";
  });
  out.yaml = to_yaml(out.config);
  out.files = std::move(files);
  return out;
}

}  // namespace

std::vector<std::string> config_key_paths() {
  std::vector<std::string> out;
  for (const auto& f : config_detail::config_fields()) out.push_back(f.path);
  return out;
}

LoadedConfig load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::vector<std::string> chain, files;
  Entry root = config_detail::load_file_tree(path, chain, files);
  return finish(std::move(root), std::move(files), overrides);
}

LoadedConfig load_config_text(std::string_view yaml_text, const std::string& source_name,
                              const std::vector<std::string>& overrides,
                              const std::string& base_dir) {
  std::vector<std::string> chain, files;
  Entry root = config_detail::load_text_tree(yaml_text, source_name, base_dir, chain, files);
  return finish(std::move(root), std::move(files), overrides);
}

std::string to_yaml(const ExperimentConfig& config) {
  std::string out =
      "# Fully resolved magellan config: every key, defaults filled in (docs/config.md).\n"
      "# magellan train <this file>\n";
  std::string section;
  for (const auto& f : config_detail::config_fields()) {
    size_t dot = f.path.find('.');
    std::string owner = dot == std::string::npos ? "" : f.path.substr(0, dot);
    if (owner != section) {
      out += owner + ":\n";
      section = owner;
    }
    std::string line = fmt::format("{}{}: {}", owner.empty() ? "" : "  ",
                                   f.path.substr(dot == std::string::npos ? 0 : dot + 1),
                                   f.write(config));
    constexpr size_t kCommentColumn = 40;
    line.resize(std::max(line.size() + 2, kCommentColumn), ' ');
    out += line + "# " + f.doc + "\n";
  }
  return out;
}

void validate_config(const ExperimentConfig& config) {
  load_config_text(to_yaml(config), "<in-memory config>");
}

}  // namespace mg
