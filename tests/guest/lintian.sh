#!/bin/bash
# Driver of tests/lintian_guest.py (`make lint-deb` where lintian is not
# installed): installs the lintian packages staged in /opt/lintian-debs and
# runs lintian on the .changes staged in /opt/dist.  Not a scenario driver:
# tests/lintian_guest.py reads lintian's output and exit status from /results.
dpkg -i /opt/lintian-debs/*.deb > /results/dpkg.log 2>&1 || { echo "dpkg -i failed: $?" >> /results/dpkg.log; }
cd /opt/dist || exit 1
lintian --info --display-info --fail-on error ./*.changes > /results/lintian.txt 2>&1
echo $? > /results/lintian.rc
