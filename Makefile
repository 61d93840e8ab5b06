# Install the way a distro package would.  Debian: the package goes where
# /usr/bin/python3 finds it, systemd-python and pyxdg come from python3-systemd
# and python3-xdg.
PREFIX ?= /usr/local
DESTDIR ?=
PYTHON ?= /usr/bin/python3
SBINDIR ?= $(PREFIX)/sbin
SYSTEMDDIR ?= $(PREFIX)/lib/systemd
PYTHONDIR ?= $(PREFIX)/lib/python3/dist-packages
DOCDIR ?= $(PREFIX)/share/doc/portreserve
MANDIR ?= $(PREFIX)/share/man

VENV ?= .venv
# What the tests and the demo need from Debian: the installed tools run on
# /usr/bin/python3 with python3-systemd and python3-xdg inside the test boots;
# systemd-python builds from source in the venv.
DEB_PACKAGES = systemd python3 python3-venv python3-systemd python3-xdg python3-jeepney \
	python3-hypothesis shellcheck util-linux

.PHONY: all install uninstall deps test lint demo bench venv clean

all:
	@echo "Nothing to build.  Try: make install DESTDIR=... PREFIX=/usr, make test, make demo"

install:
	install -d $(DESTDIR)$(PYTHONDIR)/portreserve $(DESTDIR)$(SBINDIR) \
		$(DESTDIR)$(SYSTEMDDIR)/system-generators $(DESTDIR)$(SYSTEMDDIR)/user-generators \
		$(DESTDIR)$(SYSTEMDDIR)/system $(DESTDIR)$(SYSTEMDDIR)/user \
		$(DESTDIR)$(PREFIX)/lib/portreserve $(DESTDIR)$(DOCDIR) $(DESTDIR)$(MANDIR)/man8
	install -m 0644 portreserve/*.py $(DESTDIR)$(PYTHONDIR)/portreserve/
	printf '#!%s -I\nimport sys\n\nfrom portreserve.cli import main\n\nsys.exit(main())\n' \
		'$(PYTHON)' > $(DESTDIR)$(SBINDIR)/portreserve
	# portrelease runs in the start path of every consumer: -S skips site.py
	# (about 1.5 ms); the package directory is added by hand instead.
	printf '#!%s -IS\nimport sys\n\nsys.path.append("%s")\nfrom portreserve.release import main\n\nsys.exit(main())\n' \
		'$(PYTHON)' '$(PYTHONDIR)' > $(DESTDIR)$(SBINDIR)/portrelease
	chmod 0755 $(DESTDIR)$(SBINDIR)/portreserve $(DESTDIR)$(SBINDIR)/portrelease
	sed -e '1s|^#!.*|#!$(PYTHON) -I|' -e 's|@SBINDIR@|$(SBINDIR)|g' generators/portreserve-generator \
		> $(DESTDIR)$(SYSTEMDDIR)/system-generators/portreserve-generator
	chmod 0755 $(DESTDIR)$(SYSTEMDDIR)/system-generators/portreserve-generator
	ln -sf ../system-generators/portreserve-generator $(DESTDIR)$(SYSTEMDDIR)/user-generators/portreserve-generator
	for unit in units/system/*; do \
		sed 's|@SBINDIR@|$(SBINDIR)|g' $$unit > $(DESTDIR)$(SYSTEMDDIR)/system/$${unit##*/}; \
		chmod 0644 $(DESTDIR)$(SYSTEMDDIR)/system/$${unit##*/}; \
	done
	for unit in units/user/*; do \
		sed 's|@SBINDIR@|$(SBINDIR)|g' $$unit > $(DESTDIR)$(SYSTEMDDIR)/user/$${unit##*/}; \
		chmod 0644 $(DESTDIR)$(SYSTEMDDIR)/user/$${unit##*/}; \
	done
	install -m 0644 README.md $(DESTDIR)$(DOCDIR)/
	install -m 0644 man/portreserve.8 man/portrelease.8 $(DESTDIR)$(MANDIR)/man8/
	$(PYTHON) -m compileall -q $(DESTDIR)$(PYTHONDIR)/portreserve || true

uninstall:
	rm -rf $(DESTDIR)$(PYTHONDIR)/portreserve
	rm -f $(DESTDIR)$(SBINDIR)/portreserve $(DESTDIR)$(SBINDIR)/portrelease \
		$(DESTDIR)$(SYSTEMDDIR)/system-generators/portreserve-generator \
		$(DESTDIR)$(SYSTEMDDIR)/user-generators/portreserve-generator
	for unit in units/system/*; do rm -f $(DESTDIR)$(SYSTEMDDIR)/system/$${unit##*/}; done
	for unit in units/user/*; do rm -f $(DESTDIR)$(SYSTEMDDIR)/user/$${unit##*/}; done
	rm -rf $(DESTDIR)$(DOCDIR)
	rm -f $(DESTDIR)$(MANDIR)/man8/portreserve.8 $(DESTDIR)$(MANDIR)/man8/portrelease.8

deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/.done: setup.cfg pyproject.toml | deps
	# Debian's python3-systemd, python3-xdg and python3-jeepney, as on a real
	# host: the venv sees the system's site-packages and adds only test tools.
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(VENV)/bin/pip install -q pytest ruff mypy hypothesis
	$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.done

lint: venv
	$(VENV)/bin/ruff check portreserve tests
	$(VENV)/bin/ruff format --check portreserve tests
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

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
