package anthropic

// errorEventType returns error.type from the data of an "event: error".
func errorEventType(data string) string {
	e, ok := parseUpstreamError([]byte(data))
	if !ok {
		return ""
	}
	return e.Error.Type
}
