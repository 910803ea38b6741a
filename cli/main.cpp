// magellan: command-line entry point.
#include <cstdio>

int main(int argc, char** argv) {
  std::printf("magellan %s\n", MAGELLAN_VERSION);
  return 0;
}
