#pragma once
// One function per subcommand (cli/cmd_*.cpp). Each parses its own flags with
// Boost.Program_options, returns the exit code, and throws mg::Error for the one clear line
// main() prints.
#include <cstdint>
#include <string>
#include <vector>

#include <boost/program_options.hpp>

namespace mg::cli {

using Args = std::vector<std::string>;  // the arguments after the subcommand name

int cmd_train(const Args& args);
int cmd_demo(const Args& args);
int cmd_info(const Args& args);
int cmd_eval(const Args& args);
int cmd_generate(const Args& args);
int cmd_quantize(const Args& args);
int cmd_merge_lora(const Args& args);
int cmd_import_hf(const Args& args);
int cmd_export_experts(const Args& args);
int cmd_tokenizer(const Args& args);
int cmd_tokenize(const Args& args);
int cmd_sweep(const Args& args);

// Shared helpers.
// Parses `args` against `desc`. With `positional`, every non-option argument is collected
// there (config paths, key=value overrides, files); without it they are errors.
boost::program_options::variables_map parse_args(const Args& args,
                                                 const boost::program_options::options_description& desc,
                                                 std::vector<std::string>* positional = nullptr);
// Refuses an output path that would destroy an input or is not a file: `out` is one of
// `inputs` (compared by file identity: another spelling, a symbolic or hard link all count;
// files that do not exist are skipped), or `out` exists and is not a regular file (a device
// such as /dev/null, a FIFO, a directory). Throws mg::Error naming `where` and both paths.
void check_output_path(const std::string& out, const std::vector<std::string>& inputs, const char* where);
// "15496 995" -> ids: every whitespace-separated word must be a whole decimal integer in
// [0, V); otherwise mg::Error "[where] 'x' (word 2) is not a token id" / "id 300 (word 1) is
// outside the vocabulary [0, 257)". An empty text gives no ids (callers decide if that is ok).
std::vector<int32_t> parse_token_ids(const std::string& text, int64_t V, const std::string& where);
std::string quote_arg(const std::string& s);  // shell-quoted when needed, for printed commands
// The program name as invoked (argv[0]), for the commands printed after a run.
const std::string& program_name();
void set_program_name(const std::string& argv0);

}  // namespace mg::cli
