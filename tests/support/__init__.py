"""Helpers the tests share: free ports, configs in temporary folders, a real node process, real peers."""
