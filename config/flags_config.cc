#include "config/flags_config.h"

#include <yaml-cpp/yaml.h>

#include <string_view>

namespace wsgate::config {

LoadResult LoadFlagsConfig(const std::string& listen, const std::vector<std::string>& backends) {
  YAML::Node root;
  YAML::Node listener;
  listener["name"] = "public";
  listener["address"] = listen;
  root["listeners"].push_back(listener);
  YAML::Node route;
  route["pool"] = "app";
  root["routes"].push_back(route);
  YAML::Node pool;
  pool["name"] = "app";
  pool["balance"] = "least_conn";
  pool["backends"] = YAML::Node(YAML::NodeType::Sequence);
  for (const std::string& address : backends) {
    YAML::Node backend;
    backend["address"] = address;
    pool["backends"].push_back(backend);
  }
  root["pools"].push_back(pool);
  YAML::Emitter out;
  out << root;
  LoadResult result = LoadConfigString(out.c_str(), "command line");
  if (result) {
    ProxyConfig& config = result.value();
    config.source_path.clear();  // there is no file to reload
    // Later checks (config/validate.h) point at the flag, as the loader's errors below do.
    for (BackendConfig& backend : config.pools[0].backends) {
      backend.origin = ConfigError{"--backend", 0, 0, "", ""};
    }
    return result;
  }
  for (ConfigError& error : result.error()) {
    const std::string_view path = error.key_path;
    const char* flag = nullptr;
    if (path.rfind("listeners[0]", 0) == 0) {
      flag = "--listen";
    } else if (path.rfind("pools[0].backends", 0) == 0) {
      flag = "--backend";
    }
    if (flag == nullptr) continue;  // not about a flag's value: keep the position
    error.file = flag;
    error.line = 0;
    error.column = 0;
    error.key_path.clear();
  }
  return result;
}

}  // namespace wsgate::config
