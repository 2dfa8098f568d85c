// The dashboard's script (not written yet: the page links /metrics and the JSON snapshot).
