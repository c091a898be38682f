// The doctest runner of the C++ unit tests (ctest discovers every TEST_CASE).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
