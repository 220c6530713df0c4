# Parley: one Makefile for every binary, the tests and the benchmarks.
#
#   make          build bin/parley-rest (and the other binaries as they land)
#   make deps     install the Debian packages the build, run and tests need
#   make run      build, then start REST (:8000) and the broker (:8001) in the foreground
#   make test     build release and sanitizer binaries, run every test on both
#   make bench    benchmarks (not tests: they print figures, they do not fail on them)
#   make format   clang-format every C file in place
#   make clean    remove build output

VERSION := 0.1.0

# Debian 12 packages: build, run, test and bench.
DEB_PACKAGES := gcc make pkg-config clang libclang-rt-14-dev clang-format \
	libmicrohttpd-dev libfcgi-dev libwebsockets-dev libwebsockets-evlib-ev libjansson-dev \
	libcurl4-openssl-dev libsqlite3-dev sqlite3 libssl-dev \
	python3 python3-websockets wrk curl libedit-dev tmux \
	nginx lighttpd apache2 spawn-fcgi openssl chromium systemd

PKGS := libmicrohttpd jansson sqlite3 libcrypto
BROKER_PKGS := libwebsockets libcurl jansson sqlite3 libcrypto
CC ?= cc
CSTD := -std=c11 -D_GNU_SOURCE
WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter
CFLAGS_COMMON = $(CSTD) $(WARN) -MMD -MP -Icommon -Ibuild/gen \
	-DPARLEY_VERSION='"$(VERSION)"' $(shell pkg-config --cflags $(PKGS) $(BROKER_PKGS) 2>/dev/null)
LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread
BROKER_LIBS = $(shell pkg-config --libs $(BROKER_PKGS) 2>/dev/null) -lpthread
CLIENT_LIBS = $(shell pkg-config --libs libwebsockets libcurl jansson libedit 2>/dev/null)

# Two builds of the same sources: release (bin/) and sanitizers (build/asan/bin/).
REL_DIR := build/release
ASAN_DIR := build/asan
REL_CFLAGS := -O2 -g
ASAN_CFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
ASAN_CC := clang

COMMON_SRC := common/log.c common/clock.c common/perr.c common/config.c common/jsonx.c \
	common/db.c common/db_sessions.c common/db_messages.c common/db_live.c common/db_keys.c \
	common/auth.c common/notify.c common/utf8.c build/gen/schema_sql.c
REST_SRC := rest/router.c rest/reply.c rest/h_meta.c rest/h_sessions.c rest/h_messages.c \
	rest/h_static.c build/gen/openapi_json.c \
	rest/keys_cmd.c rest/main_mhd.c
FCGI_SRC := $(filter-out rest/main_mhd.c rest/keys_cmd.c,$(REST_SRC)) rest/main_fcgi.c
BROKER_SRC := broker/main.c broker/ws.c broker/fanout.c broker/proto.c broker/sessions.c \
	broker/inbound.c broker/flat.c broker/actions.c broker/templates.c broker/reconcile.c broker/assistant.c broker/asst_echo.c broker/asst_llm.c broker/llm_http.c \
	broker/llm_providers.c broker/sse.c broker/notify_in.c broker/dbq.c broker/map.c \
	broker/access.c broker/envelope.c
CLIENT_SRC := common/log.c common/clock.c common/perr.c common/config.c common/jsonx.c common/utf8.c \
	client/main.c client/repl.c client/commands.c client/term.c client/wsconn.c client/crest.c \
	client/show.c client/script.c
UNIT_TESTS := test_config test_clock test_db test_notify test_dbq

SCHEMA := $(sort $(wildcard schema/*.sql))

objs = $(patsubst %.c,$(1)/obj/%.o,$(2))

# Keep intermediate files (the unit tests' objects): make would otherwise delete them
# after `make test`, printing a line after the runner's "N passed, M failed".
.SECONDARY:

.PHONY: all deps run test test-release test-asan bench format format-check clean asan web
BINS := parley-rest parley-broker parley-fcgi parley
all: $(addprefix bin/,$(BINS)) web

# ---- dependencies --------------------------------------------------------------
deps:
	@missing=""; command -v npm >/dev/null 2>&1 || missing=" nodejs npm"; \
	for p in $(DEB_PACKAGES); do \
		dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
		echo "make deps: installing$$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	else \
		echo "make deps: missing Debian packages. Install them with:"; \
		echo "  sudo apt-get update && sudo apt-get install -y$$missing"; exit 1; \
	fi

# ---- web: Swagger UI for /docs, playwright-core for the browser tests (npm, not committed)
WEB_VENDOR := www/vendor/swagger-ui
SWAGGER_FILES := swagger-ui-bundle.js swagger-ui.css favicon-16x16.png favicon-32x32.png
web: $(WEB_VENDOR)/swagger-ui-bundle.js

node_modules/.package-lock.json: package.json package-lock.json | deps
	npm ci --ignore-scripts --no-audit --no-fund

$(WEB_VENDOR)/swagger-ui-bundle.js: node_modules/.package-lock.json
	@mkdir -p $(@D)
	cp $(addprefix node_modules/swagger-ui-dist/,$(SWAGGER_FILES)) $(@D)/
	@touch $@

# ---- generated sources ---------------------------------------------------------
build/gen/schema_sql.c: $(SCHEMA) tools/embed_schema.sh | deps
	@mkdir -p $(@D)
	sh tools/embed_schema.sh $(SCHEMA) > $@.tmp && mv $@.tmp $@

build/gen/openapi_json.c: schema/openapi.json tools/embed_file.sh | deps
	@mkdir -p $(@D)
	sh tools/embed_file.sh parley_openapi schema/openapi.json > $@.tmp && mv $@.tmp $@

# ---- release build -------------------------------------------------------------
$(REL_DIR)/obj/%.o: %.c | deps build/gen/schema_sql.c build/gen/openapi_json.c
	@mkdir -p $(@D)
	$(CC) $(REL_CFLAGS) $(CFLAGS_COMMON) -c $< -o $@

bin/parley-rest: $(call objs,$(REL_DIR),$(COMMON_SRC) $(REST_SRC))
	@mkdir -p $(@D)
	$(CC) $(REL_CFLAGS) $^ -o $@ $(LIBS)

bin/parley-broker: $(call objs,$(REL_DIR),$(COMMON_SRC) $(BROKER_SRC))
	@mkdir -p $(@D)
	$(CC) $(REL_CFLAGS) $^ -o $@ $(BROKER_LIBS)

bin/parley-fcgi: $(call objs,$(REL_DIR),$(COMMON_SRC) $(FCGI_SRC))
	@mkdir -p $(@D)
	$(CC) $(REL_CFLAGS) $^ -o $@ $(LIBS) -lfcgi

bin/parley: $(call objs,$(REL_DIR),$(CLIENT_SRC))
	@mkdir -p $(@D)
	$(CC) $(REL_CFLAGS) $^ -o $@ $(CLIENT_LIBS)

$(REL_DIR)/tests/%: $(REL_DIR)/obj/tests/unit/%.o $(call objs,$(REL_DIR),$(COMMON_SRC))
	@mkdir -p $(@D)
	$(CC) $(REL_CFLAGS) $^ -o $@ $(LIBS)

# test_dbq also links the broker's database thread (and libwebsockets for its wake-ups).
$(REL_DIR)/tests/test_dbq: $(call objs,$(REL_DIR),tests/unit/test_dbq.c broker/dbq.c $(COMMON_SRC))
	@mkdir -p $(@D)
	$(CC) $(REL_CFLAGS) $^ -o $@ $(BROKER_LIBS)

# ---- sanitizer build (same sources, clang, ASan + UBSan) -----------------------
$(ASAN_DIR)/obj/%.o: %.c | deps build/gen/schema_sql.c build/gen/openapi_json.c
	@mkdir -p $(@D)
	$(ASAN_CC) $(ASAN_CFLAGS) $(CFLAGS_COMMON) -c $< -o $@

$(ASAN_DIR)/bin/parley-rest: $(call objs,$(ASAN_DIR),$(COMMON_SRC) $(REST_SRC))
	@mkdir -p $(@D)
	$(ASAN_CC) $(ASAN_CFLAGS) $^ -o $@ $(LIBS)

$(ASAN_DIR)/bin/parley-broker: $(call objs,$(ASAN_DIR),$(COMMON_SRC) $(BROKER_SRC))
	@mkdir -p $(@D)
	$(ASAN_CC) $(ASAN_CFLAGS) $^ -o $@ $(BROKER_LIBS)

$(ASAN_DIR)/bin/parley-fcgi: $(call objs,$(ASAN_DIR),$(COMMON_SRC) $(FCGI_SRC))
	@mkdir -p $(@D)
	$(ASAN_CC) $(ASAN_CFLAGS) $^ -o $@ $(LIBS) -lfcgi

$(ASAN_DIR)/bin/parley: $(call objs,$(ASAN_DIR),$(CLIENT_SRC))
	@mkdir -p $(@D)
	$(ASAN_CC) $(ASAN_CFLAGS) $^ -o $@ $(CLIENT_LIBS)

$(ASAN_DIR)/tests/%: $(ASAN_DIR)/obj/tests/unit/%.o $(call objs,$(ASAN_DIR),$(COMMON_SRC))
	@mkdir -p $(@D)
	$(ASAN_CC) $(ASAN_CFLAGS) $^ -o $@ $(LIBS)

$(ASAN_DIR)/tests/test_dbq: $(call objs,$(ASAN_DIR),tests/unit/test_dbq.c broker/dbq.c $(COMMON_SRC))
	@mkdir -p $(@D)
	$(ASAN_CC) $(ASAN_CFLAGS) $^ -o $@ $(BROKER_LIBS)

asan: $(addprefix $(ASAN_DIR)/bin/,$(BINS)) $(addprefix $(ASAN_DIR)/tests/,$(UNIT_TESTS))

# ---- run -----------------------------------------------------------------------
run: all
	@bash tools/run.sh

# ---- tests ---------------------------------------------------------------------
# The whole suite runs twice: on the release binaries and under ASan + UBSan.
# The runner's last line is "N passed, M failed" over both passes.
TEST_BUILD := all $(addprefix $(REL_DIR)/tests/,$(UNIT_TESTS)) asan
test: $(TEST_BUILD) format-check
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=23 \
	 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	 /usr/bin/python3 tests/run.py --pass release=bin --pass asan=$(ASAN_DIR)/bin

test-release: all $(addprefix $(REL_DIR)/tests/,$(UNIT_TESTS))
	@/usr/bin/python3 tests/run.py --pass release=bin $(T)

test-asan: asan
	@ASAN_OPTIONS=detect_leaks=1:exitcode=23 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	 /usr/bin/python3 tests/run.py --pass asan=$(ASAN_DIR)/bin $(T)

# ---- benchmarks ----------------------------------------------------------------
# rest_bench (wrk) then broker_bench (bench programs below); both run even if one fails.
BENCH_DIR := build/bench
BENCH_CFLAGS := -O2 -g $(CSTD) $(WARN)
BENCH_PROGS := $(BENCH_DIR)/loadgen $(BENCH_DIR)/ceiling
bench: all $(BENCH_PROGS)
	@rc=0; sh bench/rest_bench.sh || rc=1; sh bench/broker_bench.sh || rc=1; exit $$rc

$(BENCH_DIR)/loadgen: bench/loadgen.c | deps
	@mkdir -p $(@D)
	$(CC) $(BENCH_CFLAGS) $(shell pkg-config --cflags jansson 2>/dev/null) $< -o $@ \
		$(shell pkg-config --libs jansson 2>/dev/null)

$(BENCH_DIR)/ceiling: bench/ceiling.c | deps
	@mkdir -p $(@D)
	$(CC) $(BENCH_CFLAGS) $< -o $@ -lpthread

# ---- formatting ----------------------------------------------------------------
C_FILES = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
format:
	clang-format -i $(C_FILES)

format-check: | deps
	@out=$$(clang-format --dry-run $(C_FILES) 2>&1); \
	if [ -n "$$out" ]; then echo "$$out" | head -20; \
		echo "format-check: run 'make format' to fix the files above"; exit 1; fi

clean:
	rm -rf build bin www/vendor

-include $(shell find build -name '*.d' 2>/dev/null)
