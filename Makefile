# Parley: one Makefile for every binary, the tests and the benchmarks.
#
#   make          build bin/parley-rest (and the other binaries as they land)
#   make deps     install the Debian packages the build, run and tests need
#   make run      build, then start REST (:8000) and the broker (:8001) in the foreground
#   make test     build release and sanitizer binaries, run every test on both, and the
#                 scenarios again on PostgreSQL (release binaries)
#   make test-release / test-asan / test-pg   one pass (T="14_ 20_" filters the files)
#   make bench    benchmarks (not tests: they print figures, they do not fail on them)
#   make format   clang-format every C file in place
#   make man      manual pages into build/man from the option table (bin/PROG --man)
#   make install  programs, www/, man pages, systemd units, example config under PREFIX
#                 (default /usr/local) in DESTDIR; make uninstall removes them again
#   make deb      the Debian package build/parley_VERSION_ARCH.deb (dpkg-deb)
#   make clean    remove build output

VERSION := 0.1.0

# Debian 12 packages: build, run, test and bench.
DEB_PACKAGES := gcc make pkg-config clang libclang-rt-14-dev clang-format \
	libmicrohttpd-dev libfcgi-dev libwebsockets-dev libwebsockets-evlib-ev libjansson-dev \
	libcurl4-openssl-dev libsqlite3-dev sqlite3 libssl-dev postgresql libpq-dev redis-server libhiredis-dev iproute2 \
	python3 python3-websockets wrk curl libedit-dev tmux \
	nginx lighttpd apache2 spawn-fcgi openssl chromium systemd \
	groff-base man-db dpkg-dev lintian

PKGS := libmicrohttpd jansson sqlite3 libpq hiredis libcrypto
BROKER_PKGS := libwebsockets libcurl jansson sqlite3 libpq hiredis libcrypto
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
	common/quota.c common/db.c common/db_quota.c common/db_sqlite_quota.c common/db_pg_quota.c \
	common/db_sqlite.c common/db_sqlite_sessions.c common/db_sqlite_messages.c \
	common/db_sqlite_live.c common/db_sqlite_keys.c common/db_sqlite_regen.c \
	common/db_pg.c common/db_pg_sessions.c common/db_pg_messages.c common/db_pg_keys.c \
	common/db_pg_live.c common/db_pg_regen.c \
	common/auth.c common/notify.c common/notify_redis.c common/redisc.c common/hostcheck.c common/utf8.c common/names.c common/reply_policy.c build/gen/schema_sql.c \
	build/gen/schema_pg_sql.c
# the router and its handlers, which every front-end links
ROUTER_SRC := rest/router.c rest/reply.c rest/h_meta.c rest/h_sessions.c rest/h_messages.c \
	rest/h_static.c build/gen/openapi_json.c
REST_SRC := $(ROUTER_SRC) rest/keys_cmd.c rest/ws_relay.c rest/main_mhd.c
FCGI_SRC := $(ROUTER_SRC) rest/fcgi_params.c rest/main_fcgi.c
BROKER_SRC := broker/main.c broker/ws.c broker/fanout.c broker/proto.c broker/sessions.c \
	broker/inbound.c broker/flat.c broker/actions.c broker/templates.c broker/reconcile.c broker/assistant.c broker/asst_echo.c broker/asst_llm.c broker/llm_http.c \
	broker/llm_providers.c broker/llm_room.c broker/sse.c broker/notify_in.c broker/dbq.c broker/map.c \
	broker/access.c broker/envelope.c broker/gate.c broker/relay.c broker/rds.c broker/asst_lease.c broker/roster.c \
	broker/regen.c
CLIENT_SRC := common/log.c common/clock.c common/perr.c common/config.c common/jsonx.c common/utf8.c \
	client/main.c client/repl.c client/commands.c client/term.c client/wsconn.c client/crest.c \
	client/show.c client/script.c client/who.c common/names.c common/reply_policy.c
UNIT_TESTS := test_config test_clock test_db test_notify test_hostcheck test_router test_fcgi \
	test_sse test_utf8 test_dbq test_auth test_inbound test_pg_lease test_policy
# what a unit test links besides common/ (its test_*.o and COMMON_SRC), and with what
UNIT_SRC_test_router := $(ROUTER_SRC)
UNIT_SRC_test_fcgi := $(ROUTER_SRC) rest/fcgi_params.c
UNIT_SRC_test_sse := broker/sse.c broker/llm_providers.c broker/llm_room.c
UNIT_SRC_test_dbq := broker/dbq.c
# test_dbq: the database thread wakes the loop through lws
UNIT_LIBS_test_dbq = $(BROKER_LIBS)
# test_inbound: the whole broker but main.c, without sockets (fuzz/broker_rig.c)
UNIT_SRC_test_inbound = $(filter-out broker/main.c,$(BROKER_SRC)) fuzz/broker_rig.c
UNIT_LIBS_test_inbound = $(BROKER_LIBS)

SCHEMA := $(sort $(wildcard schema/*.sql))
SCHEMA_PG := $(sort $(wildcard schema/pg/*.sql))

objs = $(patsubst %.c,$(1)/obj/%.o,$(2))

# Keep intermediate files (the unit tests' objects): make would otherwise delete them
# after `make test`, printing a line after the runner's "N passed, M failed".
.SECONDARY:

.PHONY: all deps run test test-release test-asan test-pg bench format format-check clean asan web \
	fuzz fuzz-build man install uninstall deb
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
	sh tools/embed_schema.sh parley_migrations $(SCHEMA) > $@.tmp && mv $@.tmp $@

build/gen/schema_pg_sql.c: $(SCHEMA_PG) tools/embed_schema.sh | deps
	@mkdir -p $(@D)
	sh tools/embed_schema.sh parley_pg_migrations $(SCHEMA_PG) > $@.tmp && mv $@.tmp $@

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

.SECONDEXPANSION:
$(REL_DIR)/tests/%: $(REL_DIR)/obj/tests/unit/%.o $(call objs,$(REL_DIR),$(COMMON_SRC)) \
		$$(call objs,$(REL_DIR),$$(UNIT_SRC_$$*))
	@mkdir -p $(@D)
	$(CC) $(REL_CFLAGS) $^ -o $@ $(or $(UNIT_LIBS_$*),$(LIBS))

# unit tests of rest/ and broker/ include their headers (and the broker rig's, fuzz/)
$(REL_DIR)/obj/tests/unit/%.o $(ASAN_DIR)/obj/tests/unit/%.o: CFLAGS_COMMON += -Irest -Ibroker \
	-Ifuzz
$(REL_DIR)/obj/fuzz/%.o $(ASAN_DIR)/obj/fuzz/%.o: CFLAGS_COMMON += -Ibroker

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

$(ASAN_DIR)/tests/%: $(ASAN_DIR)/obj/tests/unit/%.o $(call objs,$(ASAN_DIR),$(COMMON_SRC)) \
		$$(call objs,$(ASAN_DIR),$$(UNIT_SRC_$$*))
	@mkdir -p $(@D)
	$(ASAN_CC) $(ASAN_CFLAGS) $^ -o $@ $(or $(UNIT_LIBS_$*),$(LIBS))

asan: $(addprefix $(ASAN_DIR)/bin/,$(BINS)) $(addprefix $(ASAN_DIR)/tests/,$(UNIT_TESTS))

# ---- fuzzing (libFuzzer, clang, ASan + UBSan) ---------------------------------
# One harness per input door, fuzz/fuzz_*.c; its seeds in fuzz/corpus/NAME/, its
# dictionary in fuzz/NAME.dict. `make fuzz` runs each for FUZZ_SECONDS; what it finds
# goes into build/fuzz/corpus/NAME/ (the committed corpus only grows by hand), crashes
# into build/fuzz/artifacts/. `make test` runs each for a few seconds (45_fuzz_smoke.py).
FUZZ_DIR := build/fuzz
FUZZ_SECONDS ?= 60
FUZZ_CFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
	-fno-sanitize-recover=undefined
FUZZ_HARNESSES := fuzz_sse fuzz_router fuzz_fcgi fuzz_config fuzz_inbound
FUZZ_BINS := $(addprefix $(FUZZ_DIR)/,$(FUZZ_HARNESSES))
FUZZ_REST_SRC := $(COMMON_SRC) $(ROUTER_SRC) rest/fcgi_params.c

$(FUZZ_DIR)/obj/%.o: %.c | deps build/gen/schema_sql.c build/gen/openapi_json.c
	@mkdir -p $(@D)
	$(ASAN_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link $(CFLAGS_COMMON) -Irest -Ibroker \
		-c $< -o $@

$(FUZZ_DIR)/fuzz_sse: $(call objs,$(FUZZ_DIR),fuzz/fuzz_sse.c broker/sse.c \
		broker/llm_providers.c broker/llm_room.c $(COMMON_SRC))
$(FUZZ_DIR)/fuzz_router $(FUZZ_DIR)/fuzz_fcgi: $(FUZZ_DIR)/%: \
		$(call objs,$(FUZZ_DIR),$(FUZZ_REST_SRC)) $(FUZZ_DIR)/obj/fuzz/%.o
$(FUZZ_DIR)/fuzz_config: $(call objs,$(FUZZ_DIR),fuzz/fuzz_config.c $(COMMON_SRC))
# the broker's door, with the whole broker behind it (all but main.c)
$(FUZZ_DIR)/fuzz_inbound: $(call objs,$(FUZZ_DIR),fuzz/fuzz_inbound.c fuzz/broker_rig.c \
		$(filter-out broker/main.c,$(BROKER_SRC)) $(COMMON_SRC))
FUZZ_LIBS_fuzz_inbound = $(BROKER_LIBS)
$(FUZZ_BINS):
	$(ASAN_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $^ -o $@ $(or $(FUZZ_LIBS_$(@F)),$(LIBS))

fuzz-build: $(FUZZ_BINS)

fuzz: $(FUZZ_BINS)
	@mkdir -p $(FUZZ_DIR)/artifacts; for h in $(FUZZ_HARNESSES); do \
		mkdir -p $(FUZZ_DIR)/corpus/$$h; \
		dict=; [ -f fuzz/$$h.dict ] && dict=-dict=fuzz/$$h.dict; \
		echo "== $$h for $(FUZZ_SECONDS) s (log: $(FUZZ_DIR)/$$h.log)"; \
		$(FUZZ_DIR)/$$h -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
			-artifact_prefix=$(FUZZ_DIR)/artifacts/$$h- $$dict \
			$(FUZZ_DIR)/corpus/$$h fuzz/corpus/$$h > $(FUZZ_DIR)/$$h.log 2>&1; rc=$$?; \
		grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^Done|^stat::(number_of_executed_units|peak_rss_mb)|ERROR|SUMMARY|artifact' $(FUZZ_DIR)/$$h.log; \
		[ $$rc = 0 ] || { echo "make fuzz: $$h failed (exit $$rc)"; exit 1; }; \
	done

# ---- run -----------------------------------------------------------------------
run: all
	@bash tools/run.sh

# ---- tests ---------------------------------------------------------------------
# The whole suite runs twice on SQLite: on the release binaries and under ASan + UBSan;
# then the scenarios run a third time on PostgreSQL, release binaries only (a pass whose
# label starts with "pg": tests/run.py starts a throwaway PostgreSQL 15 cluster for it,
# tests/lib/pgcluster.py). The runner's last line is "N passed, M failed" over all passes.
TEST_BUILD := all $(addprefix $(REL_DIR)/tests/,$(UNIT_TESTS)) asan fuzz-build
test: $(TEST_BUILD) format-check
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=23 \
	 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	 /usr/bin/python3 tests/run.py --pass release=bin --pass asan=$(ASAN_DIR)/bin --pass pg=bin

test-release: all $(addprefix $(REL_DIR)/tests/,$(UNIT_TESTS)) fuzz-build
	@/usr/bin/python3 tests/run.py --pass release=bin $(T)

test-asan: asan fuzz-build
	@ASAN_OPTIONS=detect_leaks=1:exitcode=23 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	 /usr/bin/python3 tests/run.py --pass asan=$(ASAN_DIR)/bin $(T)

# the scenarios on PostgreSQL, release binaries (unit tests only those named test_pg_*)
test-pg: all $(addprefix $(REL_DIR)/tests/,$(filter test_pg_%,$(UNIT_TESTS)))
	@/usr/bin/python3 tests/run.py --pass pg=bin $(T)

# ---- benchmarks ----------------------------------------------------------------
# rest_bench (wrk), broker_bench (bench programs below), then pg_bench (PostgreSQL beside
# SQLite, on a throwaway cluster of its own); each runs even if one before it fails.
BENCH_DIR := build/bench
BENCH_CFLAGS := -O2 -g $(CSTD) $(WARN)
BENCH_PROGS := $(BENCH_DIR)/loadgen $(BENCH_DIR)/ceiling
bench: all $(BENCH_PROGS)
	@rc=0; sh bench/rest_bench.sh || rc=1; sh bench/broker_bench.sh || rc=1; \
		sh bench/pg_bench.sh || rc=1; sh bench/relay_bench.sh || rc=1; \
		sh bench/restws_bench.sh || rc=1; exit $$rc

$(BENCH_DIR)/loadgen: bench/loadgen.c | deps
	@mkdir -p $(@D)
	$(CC) $(BENCH_CFLAGS) $(shell pkg-config --cflags jansson 2>/dev/null) $< -o $@ \
		$(shell pkg-config --libs jansson 2>/dev/null)

$(BENCH_DIR)/ceiling: bench/ceiling.c | deps
	@mkdir -p $(@D)
	$(CC) $(BENCH_CFLAGS) $< -o $@ -lpthread

# ---- manual pages --------------------------------------------------------------
# Each page is its prose (man/PROG.N.in) with @OPTIONS@ replaced by `PROG --man`: the rows
# of common/config.c's option table for that program, so flags and pages cannot disagree.
# INSTALL_FROM: the build whose programs are used and installed (bin, or build/asan/bin).
INSTALL_FROM ?= bin
MAN_OUT := build/man
MAN_PAGES := $(MAN_OUT)/parley-rest.8 $(MAN_OUT)/parley-fcgi.8 $(MAN_OUT)/parley-broker.8 \
	$(MAN_OUT)/parley.1
man: $(MAN_PAGES)

$(MAN_OUT)/%: man/%.in $(INSTALL_FROM)/$$(basename $$*) tools/render_man.sh
	@mkdir -p $(@D)
	sh tools/render_man.sh $< $(INSTALL_FROM)/$(basename $*) $(VERSION) > $@.tmp.$$$$ && \
		mv $@.tmp.$$$$ $@

# ---- install -------------------------------------------------------------------
# The daemons (section 8) go to sbin, the client to bin; www/ to share/parley/www, where an
# installed parley-rest finds it by itself (../share/parley/www beside its directory);
# units rendered for the prefix. The list of what was installed is kept in
# share/parley/installed-files, which `make uninstall` removes file by file.
PREFIX ?= /usr/local
BINDIR = $(PREFIX)/bin
SBINDIR = $(PREFIX)/sbin
DATADIR = $(PREFIX)/share
MANDIR = $(DATADIR)/man
DOCDIR = $(DATADIR)/doc/parley
SYSTEMDDIR = $(PREFIX)/lib/systemd/system
# STATIC_USER=1: units run as the system user "parley" (the package makes it) rather than
# a dynamic user.
STATIC_USER ?=
UNITS := parley-rest.service parley-broker.service parley-fcgi.service parley-fcgi.socket
MANIFEST = $(DATADIR)/parley/installed-files
INSTALL_DEPS := $(addprefix $(INSTALL_FROM)/,$(BINS)) $(MAN_PAGES) $(WEB_VENDOR)/swagger-ui-bundle.js

install: $(INSTALL_DEPS)
	@set -e; d='$(DESTDIR)'; list=$$(mktemp); trap 'rm -f "$$list"' EXIT; \
	put() { mode=$$1 src=$$2 dst=$$3; install -d -m 0755 "$$d$$(dirname "$$dst")"; \
		install -m $$mode "$$src" "$$d$$dst"; echo "$$dst" >> "$$list"; }; \
	put 0755 $(INSTALL_FROM)/parley '$(BINDIR)/parley'; \
	for b in parley-rest parley-broker parley-fcgi; do \
		put 0755 $(INSTALL_FROM)/$$b "$(SBINDIR)/$$b"; done; \
	for f in $$(cd www && find . -type f | sort); do \
		put 0644 "www/$$f" "$(DATADIR)/parley/www/$${f#./}"; done; \
	for p in $(MAN_PAGES); do n=$$(basename $$p); \
		put 0644 $$p "$(MANDIR)/man$${n##*.}/$$n"; done; \
	tmp=$$(mktemp -d); trap 'rm -rf "$$list" "$$tmp"' EXIT; \
	for u in $(UNITS); do \
		sed -e 's|/usr/local/bin/|$(SBINDIR)/|g' \
		    -e 's|/usr/local/share/parley/www|$(DATADIR)/parley/www|g' \
		    $(if $(STATIC_USER),-e '/^DynamicUser=yes$$/d' -e 's|The same dynamic user|The same user|') \
		    deploy/systemd/$$u > $$tmp/$$u; \
		put 0644 $$tmp/$$u "$(SYSTEMDDIR)/$$u"; done; \
	put 0644 deploy/parley.env '$(DOCDIR)/examples/parley.env'; \
	put 0644 README.md '$(DOCDIR)/README.md'; \
	echo '$(MANIFEST)' >> "$$list"; put 0644 "$$list" '$(MANIFEST)'; \
	echo "make install: $$(wc -l < "$$d$(MANIFEST)") files under $(DESTDIR)$(PREFIX)"

# Removes what the last install put (its list), then the now empty directories of its own.
uninstall:
	@set -e; d='$(DESTDIR)'; m="$$d$(MANIFEST)"; \
	if [ ! -f "$$m" ]; then echo "make uninstall: nothing installed ($$m missing)"; exit 0; fi; \
	n=0; while read -r f; do rm -f "$$d$$f"; n=$$((n + 1)); done < "$$m"; \
	for dir in "$$d$(DATADIR)/parley" "$$d$(DOCDIR)"; do \
		[ -d "$$dir" ] && find "$$dir" -depth -type d -empty -delete; done; \
	echo "make uninstall: $$n files removed under $(DESTDIR)$(PREFIX)"

# ---- Debian package ------------------------------------------------------------
# `make install` into a staging root with the Debian paths, then Debian's own tools:
# dpkg-shlibdeps (Depends from the libraries the programs link), dpkg-gencontrol (the
# control file from debian/control and debian/changelog), dpkg-deb. debian/postinst makes
# the "parley" system user and enables parley-rest and parley-broker without starting them.
DEB_STAGE ?= build/deb
DEB_OUT ?= build
DEB_ARCH = $(shell dpkg --print-architecture)
DEB_FILE = $(DEB_OUT)/parley_$(VERSION)_$(DEB_ARCH).deb
deb: $(INSTALL_DEPS)
	@set -e; v=$$(dpkg-parsechangelog -S Version); if [ "$$v" != "$(VERSION)" ]; then \
		echo "make deb: debian/changelog is at $$v, the Makefile at $(VERSION)"; exit 1; fi
	rm -rf $(DEB_STAGE)
	$(MAKE) --no-print-directory install DESTDIR=$(abspath $(DEB_STAGE))/root PREFIX=/usr \
		SYSTEMDDIR=/lib/systemd/system STATIC_USER=1 INSTALL_FROM=$(INSTALL_FROM)
	@set -e; r=$(DEB_STAGE)/root; \
	rm -f $$r/usr/share/parley/installed-files $$r/usr/share/doc/parley/README.md; \
	strip --strip-unneeded --remove-section=.comment --remove-section=.note \
		$$r/usr/sbin/* $$r/usr/bin/*; \
	gzip -9n $$r/usr/share/man/man*/*; \
	install -m 0644 debian/copyright $$r/usr/share/doc/parley/copyright; \
	gzip -9nc debian/changelog > $$r/usr/share/doc/parley/changelog.gz; \
	chmod 0644 $$r/usr/share/doc/parley/changelog.gz; \
	install -d -m 0755 $$r/DEBIAN; \
	install -m 0755 debian/postinst debian/prerm debian/postrm $$r/DEBIAN/; \
	echo "misc:Depends=" > $(DEB_STAGE)/substvars; \
	e=$(DEB_STAGE)/shlibdeps.err; \
	dpkg-shlibdeps -T$(DEB_STAGE)/substvars -e $$r/usr/sbin/* -e $$r/usr/bin/* 2> $$e || \
		{ cat $$e >&2; exit 1; }; \
	grep -v 'should already be installed in their package' $$e >&2 || true; \
	dpkg-gencontrol -pparley -P$$r -T$(DEB_STAGE)/substvars -f$(DEB_STAGE)/files; \
	(cd $$r && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | \
		xargs -0 md5sum > DEBIAN/md5sums); chmod 0644 $$r/DEBIAN/md5sums; \
	find $$r -type d -exec chmod 0755 {} +; \
	mkdir -p $(DEB_OUT); dpkg-deb --root-owner-group -Zxz --build $$r $(DEB_FILE)

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
