# shale -- build, test, install.
#
#   make                 libshale.a, libshale.so, the shale CLI, the tests   (build/)
#   make demo            install missing packages, build, run the demo (./demo.db)
#   make test            install missing packages, build and run every test,
#                        normally and under ASan+UBSan (build-asan/)
#   make tsan            the concurrency tests under ThreadSanitizer (build-tsan/)
#   make install PREFIX=/usr/local   header, libraries, shale.pc, the CLI
#   make deps            install the Debian packages the build needs
#   make CC=clang ...    any of the above with clang
#
# Sources are found by wildcard: src/<layer>/*.c make the library,
# tools/*.c each make a program, tests/<dir>/test_*.c make one Criterion
# binary per directory, linked with tests/support/*.c.

CC ?= cc
SHELL := /bin/bash
PREFIX ?= /usr/local
VARIANT ?= release
PKG_CONFIG ?= pkg-config

SONAME_MAJOR := 0
VERSION := 0.1.0

DEB_PACKAGES := build-essential pkg-config libzstd-dev liblz4-dev libxxhash-dev \
	libjemalloc-dev libcriterion-dev clang

WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	-Wno-unused-parameter
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE -fPIC -Iinclude -g -pthread $(WARN)

ifeq ($(VARIANT),release)
  B := build
  VFLAGS := -O2
  VLDFLAGS :=
else ifeq ($(VARIANT),asan)
  B := build-asan
  VFLAGS := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
	-fno-sanitize-recover=undefined -DSHALE_DEBUG
  VLDFLAGS := -fsanitize=address,undefined
else ifeq ($(VARIANT),tsan)
  B := build-tsan
  VFLAGS := -O1 -fno-omit-frame-pointer -fsanitize=thread -DSHALE_DEBUG
  VLDFLAGS := -fsanitize=thread
else
  $(error unknown VARIANT $(VARIANT): release, asan or tsan)
endif

CFLAGS ?=
ALL_CFLAGS := $(BASE_CFLAGS) $(VFLAGS) $(CFLAGS)
LIB_DEPS := $(shell $(PKG_CONFIG) --libs libzstd liblz4 libxxhash 2>/dev/null || echo -lzstd -llz4 -lxxhash)
LIBS := $(LIB_DEPS) -lpthread -lm
JEMALLOC := $(shell $(PKG_CONFIG) --libs jemalloc 2>/dev/null || echo -ljemalloc)
CRITERION := $(shell $(PKG_CONFIG) --libs criterion 2>/dev/null || echo -lcriterion)

# Sanitizer builds name their static library differently, so that tools that
# search a checkout for libshale.a (peerbench) only ever find the release one.
LIBA := $(B)/libshale$(if $(filter release,$(VARIANT)),,-$(VARIANT)).a

LIB_SRC := $(sort $(wildcard src/space/*.c src/pagewriter/*.c src/lsm/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(B)/%.o)
TOOL_SRC := $(sort $(wildcard tools/*.c))
TOOLS := $(TOOL_SRC:tools/%.c=$(B)/%)
SUPPORT_SRC := $(sort $(wildcard tests/support/*.c))
SUPPORT_OBJ := $(SUPPORT_SRC:%.c=$(B)/%.o)
TEST_DIRS := $(sort $(filter-out support,$(notdir $(wildcard tests/*))))
TEST_BINS := $(foreach d,$(TEST_DIRS),$(if $(wildcard tests/$(d)/test_*.c),$(B)/tests/test_$(d)))

.PHONY: all lib tools tests test test-release test-asan tsan demo deps install clean check-deps
all: lib tools tests

lib: $(LIBA) $(B)/libshale.so
tools: $(TOOLS)
tests: $(TEST_BINS)

$(B)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(LIBA): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/libshale.so: $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,libshale.so.$(SONAME_MAJOR) $(VLDFLAGS) -o $@ $^ $(LIBS)

# The CLI and tools link the static library and jemalloc.
$(B)/%: $(B)/tools/%.o $(LIBA)
	$(CC) $(VLDFLAGS) -o $@ $^ $(LIBS) $(JEMALLOC)

.SECONDEXPANSION:
$(B)/tests/test_%: $$(addprefix $(B)/,$$(subst .c,.o,$$(wildcard tests/$$*/test_*.c))) $(SUPPORT_OBJ) $(LIBA)
	@mkdir -p $(@D)
	$(CC) $(VLDFLAGS) -o $@ $^ $(CRITERION) $(LIBS)

# Test runs: every test binary in turn; Criterion prints its own summary.
# SHALE_TEST_SCALE (default 1) scales the long randomized tests.
TEST_JOBS ?= 2
# Criterion counts a test that LeakSanitizer complained about as passed, so
# the output is also searched for sanitizer reports.
test-run: $(TEST_BINS) $(TOOLS)
	@failed=""; for t in $(TEST_BINS); do \
		echo "== $$t"; \
		LSAN_OPTIONS=suppressions=$(CURDIR)/tests/support/lsan.supp:print_suppressions=0 \
		SHALE_TOOLS=$(B) $$t --jobs $(TEST_JOBS) --timeout 1200 2>&1 | tee $$t.log; \
		test $${PIPESTATUS[0]} -eq 0 || failed="$$failed $$t"; \
		if grep -qE "ERROR: (LeakSanitizer|AddressSanitizer)|runtime error:|WARNING: ThreadSanitizer" $$t.log; then \
			echo "$$t: sanitizer report above"; failed="$$failed $$t(sanitizer)"; fi; \
	done; \
	if [ -n "$$failed" ]; then echo "FAILED:$$failed"; exit 1; fi

test: check-deps
	$(MAKE) VARIANT=release test-run
	$(MAKE) VARIANT=asan test-run

# Criterion cannot start under ThreadSanitizer, so the concurrency tests are
# built against a small stand-in (tests/support/tsan) that runs them in-process.
TSAN_SRC := $(wildcard tests/concurrency/test_*.c) tests/support/tsan/main.c \
	$(filter-out tests/support/tsan/%,$(SUPPORT_SRC))
tsan: check-deps
	$(MAKE) VARIANT=tsan build-tsan/tsan_concurrency
	build-tsan/tsan_concurrency 2>&1 | tee build-tsan/tsan_concurrency.log; \
	test $${PIPESTATUS[0]} -eq 0 && ! grep -q "WARNING: ThreadSanitizer" build-tsan/tsan_concurrency.log

build-tsan/tsan_concurrency: $(TSAN_SRC) $(LIBA)
	$(CC) $(ALL_CFLAGS) -Itests/support/tsan $(VLDFLAGS) -o $@ $(TSAN_SRC) $(LIBA) $(LIBS)

demo: check-deps
	$(MAKE) VARIANT=release tools
	rm -rf ./demo.db
	./build/shale-demo ./demo.db

# Install the Debian packages the build needs, if any is missing.
check-deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y $$missing; \
	fi

deps: check-deps

install: lib $(B)/shale
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/bin
	install -m 644 include/shale.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(LIBA) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(B)/libshale.so $(DESTDIR)$(PREFIX)/lib/libshale.so.$(VERSION)
	ln -sf libshale.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libshale.so.$(SONAME_MAJOR)
	ln -sf libshale.so.$(SONAME_MAJOR) $(DESTDIR)$(PREFIX)/lib/libshale.so
	install -m 755 $(B)/shale $(DESTDIR)$(PREFIX)/bin/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' shale.pc.in \
		> $(DESTDIR)$(PREFIX)/lib/pkgconfig/shale.pc

clean:
	rm -rf build build-asan build-tsan demo.db

-include $(LIB_OBJ:.o=.d) $(SUPPORT_OBJ:.o=.d) $(wildcard $(B)/tests/*/*.d $(B)/tools/*.d)
