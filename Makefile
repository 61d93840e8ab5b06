# Install the way a distro package would.  The defaults give a working
# /usr/local install: systemd 252 looks for generators and units under
# /usr/local/lib/systemd/ too (measured: a generator in
# /usr/local/lib/systemd/system-generators runs at boot), and the commands add
# PYTHONDIR to sys.path themselves (/usr/bin/python3 never searches
# /usr/local/lib/python3/dist-packages).  Packages pass PREFIX=/usr and the
# distribution's directories (debian/rules, portreserve.spec).
PREFIX ?= /usr/local
DESTDIR ?=
PYTHON ?= /usr/bin/python3
SBINDIR ?= $(PREFIX)/sbin
SYSTEMDDIR ?= $(PREFIX)/lib/systemd
SYSTEMUNITDIR ?= $(SYSTEMDDIR)/system
USERUNITDIR ?= $(SYSTEMDDIR)/user
SYSTEMGENERATORDIR ?= $(SYSTEMDDIR)/system-generators
USERGENERATORDIR ?= $(SYSTEMDDIR)/user-generators
PYTHONDIR ?= $(PREFIX)/lib/python3/dist-packages
DOCDIR ?= $(PREFIX)/share/doc/portreserve
MANDIR ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
# Where packages drop reservation files: read from /usr/lib/portreserve only
# (paths.SYSTEM_CONFIG_DIRS), so made only by an install into /usr.
VENDORDIR ?= $(if $(filter /usr,$(PREFIX)),$(PREFIX)/lib/portreserve)
# no: leave byte-compiling to the package manager (dh_python3, rpm's brp scripts)
COMPILE ?= yes

VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' portreserve/__init__.py)

VENV ?= .venv
# What the tests and the demo need from Debian: the installed tools run on
# /usr/bin/python3 with python3-systemd, python3-xdg and python3-jeepney inside
# the test boots; the venv sees them (--system-site-packages).  The packaging
# tools build the .deb and the RPM.
DEB_PACKAGES = systemd python3 python3-venv python3-systemd python3-xdg python3-jeepney \
	python3-hypothesis shellcheck util-linux
BUILD_PACKAGES = dpkg-dev debhelper dh-python rpm
APT_GET = DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300

.PHONY: all install uninstall deps test lint lint-deb shellcheck demo bench venv clean deb rpm dist version

all:
	@echo "Nothing to build.  Try: make install, make deb, make rpm, make test, make demo"

install:
	@[ -x $(PYTHON) ] || { echo "make install: $(PYTHON) not found; pass PYTHON=/path/to/python3 (3.11 or later)" >&2; exit 1; }
	install -d $(DESTDIR)$(PYTHONDIR)/portreserve $(DESTDIR)$(SBINDIR) \
		$(DESTDIR)$(SYSTEMGENERATORDIR) $(DESTDIR)$(USERGENERATORDIR) \
		$(DESTDIR)$(SYSTEMUNITDIR) $(DESTDIR)$(USERUNITDIR) $(DESTDIR)$(SYSCONFDIR)/portreserve \
		$(DESTDIR)$(DOCDIR) $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 \
		$(if $(VENDORDIR),$(DESTDIR)$(VENDORDIR))
	install -m 0644 portreserve/*.py $(DESTDIR)$(PYTHONDIR)/portreserve/
	# The commands run with -I (no environment, no user site); PYTHONDIR is
	# added by hand so that a /usr/local install works too.
	printf '#!%s -I\nimport sys\n\nsys.path.append("%s")\nfrom portreserve.cli import main\n\nsys.exit(main())\n' \
		'$(PYTHON)' '$(PYTHONDIR)' > $(DESTDIR)$(SBINDIR)/portreserve
	# portrelease runs in the start path of every consumer: -S skips site.py
	# (about 1.5 ms).
	printf '#!%s -IS\nimport sys\n\nsys.path.append("%s")\nfrom portreserve.release import entry\n\nentry()\n' \
		'$(PYTHON)' '$(PYTHONDIR)' > $(DESTDIR)$(SBINDIR)/portrelease
	chmod 0755 $(DESTDIR)$(SBINDIR)/portreserve $(DESTDIR)$(SBINDIR)/portrelease
	sed -e '1s|^#!.*|#!$(PYTHON) -I|' -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@PYTHONDIR@|$(PYTHONDIR)|g' \
		generators/portreserve-generator > $(DESTDIR)$(SYSTEMGENERATORDIR)/portreserve-generator
	chmod 0755 $(DESTDIR)$(SYSTEMGENERATORDIR)/portreserve-generator
	ln -sfr $(DESTDIR)$(SYSTEMGENERATORDIR)/portreserve-generator $(DESTDIR)$(USERGENERATORDIR)/portreserve-generator
	for unit in units/system/*; do \
		sed 's|@SBINDIR@|$(SBINDIR)|g' $$unit > $(DESTDIR)$(SYSTEMUNITDIR)/$${unit##*/}; \
		chmod 0644 $(DESTDIR)$(SYSTEMUNITDIR)/$${unit##*/}; \
	done
	for unit in units/user/*; do \
		sed 's|@SBINDIR@|$(SBINDIR)|g' $$unit > $(DESTDIR)$(USERUNITDIR)/$${unit##*/}; \
		chmod 0644 $(DESTDIR)$(USERUNITDIR)/$${unit##*/}; \
	done
	install -m 0644 README.md $(DESTDIR)$(DOCDIR)/
	install -m 0644 man/*.5 $(DESTDIR)$(MANDIR)/man5/
	install -m 0644 man/*.8 $(DESTDIR)$(MANDIR)/man8/
	[ "$(COMPILE)" != yes ] || $(PYTHON) -m compileall -q $(DESTDIR)$(PYTHONDIR)/portreserve

# /etc/portreserve and what the admin put there stay.
uninstall:
	rm -rf $(DESTDIR)$(PYTHONDIR)/portreserve
	rm -f $(DESTDIR)$(SBINDIR)/portreserve $(DESTDIR)$(SBINDIR)/portrelease \
		$(DESTDIR)$(SYSTEMGENERATORDIR)/portreserve-generator \
		$(DESTDIR)$(USERGENERATORDIR)/portreserve-generator
	for unit in units/system/*; do rm -f $(DESTDIR)$(SYSTEMUNITDIR)/$${unit##*/}; done
	for unit in units/user/*; do rm -f $(DESTDIR)$(USERUNITDIR)/$${unit##*/}; done
	rm -rf $(DESTDIR)$(DOCDIR)
	for page in man/*.[58]; do rm -f $(DESTDIR)$(MANDIR)/man$${page##*.}/$${page##*/}; done

# Installs what is missing, never upgrades what is installed: the plan is
# simulated first, and a plan that would upgrade an installed package (a new
# package pulling a newer libsystemd0, say) is refused with its name.  Waits
# up to 5 minutes for another apt or dpkg to let go of the lock.
deps:
	@missing=$$(for p in $(DEB_PACKAGES) $(BUILD_PACKAGES); do \
		dpkg-query -W -f='$${db:Status-Status}\n' $$p 2>/dev/null | grep -qx installed || echo $$p; done); \
	[ -n "$$missing" ] || exit 0; \
	echo "make deps: installing" $$missing; \
	$(APT_GET) update -qq || exit 1; \
	plan=$$($(APT_GET) install -s --no-install-recommends $$missing) || { echo "$$plan"; exit 1; }; \
	upgrades=$$(echo "$$plan" | awk '$$1 == "Inst" && $$3 ~ /^\[/ { print $$2 }'); \
	if [ -n "$$upgrades" ]; then \
		echo "make deps: refusing: installing" $$missing "would upgrade installed packages:" $$upgrades >&2; \
		echo "make deps: install them by hand (apt-get install $$missing) if the upgrade is wanted" >&2; \
		exit 1; \
	fi; \
	$(APT_GET) install -y -qq --no-install-recommends $$missing

$(VENV)/.done: setup.cfg pyproject.toml | deps
	# Debian's python3-systemd, python3-xdg and python3-jeepney, as on a real
	# host: the venv sees the system's site-packages and adds only test tools.
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(VENV)/bin/pip install -q pytest ruff mypy hypothesis
	$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.done

# Every shell file of the tree: the boot drivers, the harness, CI.
shellcheck:
	shellcheck -x -P tests/guest tests/guest/*.sh tests/harness/*.sh benchmarks/*.sh .ci/run

lint: venv shellcheck
	$(VENV)/bin/ruff check portreserve tests benchmarks
	$(VENV)/bin/ruff format --check portreserve tests benchmarks
	$(VENV)/bin/mypy

test: venv
	$(VENV)/bin/python -m pytest

demo: venv
	$(VENV)/bin/python tests/demo.py

# Boots systemd a few times (root); prints the table and writes benchmarks/latest.md.
# BENCH_ARGS=--small: small N, few repetitions (CI).
bench: venv
	$(VENV)/bin/python benchmarks/generator.py
	$(VENV)/bin/python benchmarks/run.py $(BENCH_ARGS)

# Packages.  Both are built from a copy of the tree in dist/ (dpkg-buildpackage
# writes its results to the parent directory, and neither may litter the
# checkout); the results land in dist/.
DIST = dist
TREE_FILES = Makefile README.md setup.cfg pyproject.toml portreserve generators units man debian portreserve.spec

dist: $(DIST)/portreserve-$(VERSION).tar.gz

version:
	@echo $(VERSION)

$(DIST)/portreserve-$(VERSION).tar.gz: FORCE
	mkdir -p $(DIST)
	tar --sort=name --owner=0 --group=0 --numeric-owner --exclude=__pycache__ \
		--transform 's|^|portreserve-$(VERSION)/|' -czf $@ $(TREE_FILES)

deb: $(DIST)/portreserve-$(VERSION).tar.gz
	rm -rf $(DIST)/deb && mkdir -p $(DIST)/deb
	tar -C $(DIST)/deb -xzf $<
	# Not the variables of this make (DIST=..., PREFIX=...): the package's own.
	cd $(DIST)/deb/portreserve-$(VERSION) && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL dpkg-buildpackage -b -us -uc
	cp $(DIST)/deb/portreserve_$(VERSION)_all.deb $(DIST)/
	@echo "built $(DIST)/portreserve_$(VERSION)_all.deb"

# lintian is not installed here (on this Debian 12 image installing it would
# upgrade perl); run it where it is.
# lintian where it is installed; elsewhere in a throwaway root (installing it
# on Debian 12 upgrades perl, and nothing here upgrades the host): root only.
lint-deb: deb
	@if command -v lintian >/dev/null; then \
		lintian --info --display-info --fail-on error $(DIST)/deb/*.changes; \
	else \
		$(PYTHON) tests/lintian_guest.py $(DIST); \
	fi

# Debian's rpmbuild has no Fedora macros and an empty rpm database: the spec
# defines the macros it needs when they are missing, and --nodeps skips the
# BuildRequires check there.
RPMBUILD_FLAGS ?= $(if $(wildcard /etc/debian_version),--nodeps)
rpm: $(DIST)/portreserve-$(VERSION).tar.gz
	rm -rf $(DIST)/rpmbuild && mkdir -p $(DIST)/rpmbuild/SOURCES
	cp $< $(DIST)/rpmbuild/SOURCES/
	env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL rpmbuild -bb $(RPMBUILD_FLAGS) --define '_topdir $(abspath $(DIST))/rpmbuild' portreserve.spec
	cp $(DIST)/rpmbuild/RPMS/noarch/portreserve-$(VERSION)-*.noarch.rpm $(DIST)/
	@echo "built" $(DIST)/portreserve-$(VERSION)-*.noarch.rpm

FORCE:

clean:
	rm -rf $(DIST) $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
