# Tenancy: the PostgreSQL extension (built with PGXS) and the HTTP gateway.
#
#   make                 build the extension and the gateway
#   make install         install the extension into the server of $(PG_CONFIG)
#   make installcheck    pg_regress + isolation tests against a running server
#   make test            every test (scripts/test): a throw-away cluster, all suites

EXTENSION_VERSION := $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" extension/tenancy.control)

MODULE_big = tenancy
OBJS = $(patsubst %.cpp,%.o,$(sort $(wildcard extension/src/*.cpp)))
# The control file lives in extension/, so install DATA as an extension's files.
# extension/releases/ keeps the install script of every released version as
# shipped (frozen); the current version's install script is built from
# extension/sql/, and each upgrade script from its parts in
# extension/updates/<from>--<to>/ (one file per concern, so that changes made
# side by side do not collide). See docs/operations/upgrades.md.
MODULEDIR = extension
UPGRADES := $(notdir $(wildcard extension/updates/*--*))
UPGRADE_SCRIPTS := $(patsubst %,extension/tenancy--%.sql,$(UPGRADES))
# The current version's install script is installed as built (the version
# check holds it byte-identical to its frozen copy once released).
DATA = extension/tenancy.control \
	$(filter-out extension/releases/tenancy--$(EXTENSION_VERSION).sql,$(sort $(wildcard extension/releases/tenancy--*.sql)))
DATA_built = extension/tenancy--$(EXTENSION_VERSION).sql $(UPGRADE_SCRIPTS)

REGRESS = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --load-extension=tenancy --create-role=regress_client
ISOLATION = $(patsubst tests/isolation/specs/%.spec,%,$(sort $(wildcard tests/isolation/specs/*.spec)))
ISOLATION_OPTS = --inputdir=tests/isolation --outputdir=output_iso --load-extension=tenancy

PG_CXXFLAGS = -std=c++17 -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Wno-register \
	-fno-omit-frame-pointer
PG_CPPFLAGS = -Iextension/src
SHLIB_LINK += -lsodium -lcrypto -lstdc++

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS compiles every .cpp to LLVM bitcode for JIT too, but that rule does not
# see PG_CXXFLAGS (clang-14 would default to C++14).
COMPILE.cxx.bc += $(PG_CXXFLAGS) $(PG_CPPFLAGS)

# The versioned install script is assembled from one file per concern.
extension/tenancy--$(EXTENSION_VERSION).sql: $(sort $(wildcard extension/sql/*.sql))
	cat $^ > $@

# Each upgrade script is assembled from its parts, in name order.
.SECONDEXPANSION:
$(UPGRADE_SCRIPTS): extension/tenancy--%.sql: $$(sort $$(wildcard extension/updates/%/*.sql))
	cat $^ > $@

all: gateway
.PHONY: gateway test run
gateway:
	$(MAKE) -C gateway

clean: clean-gateway
clean-gateway:
	$(MAKE) -C gateway clean

test:
	scripts/test
