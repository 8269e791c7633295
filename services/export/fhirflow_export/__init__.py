"""Bulk data export: kick-off, status, cancel and files (the API Lambda), and the export workers."""
