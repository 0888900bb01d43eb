"""The app seam: everything that differs from one app under test to another."""
