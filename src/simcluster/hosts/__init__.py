"""Bare-metal GPU test hosts that Ansible reaches over real SSH (``simcluster hosts up|down|inventory``)."""
