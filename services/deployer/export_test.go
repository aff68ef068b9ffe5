package deployer

// InjectBeforePredict makes f run before every model call of the service
// with the version called: tests plant slow or stalled models with it.
func InjectBeforePredict(s *Service, f func(version int64)) { s.app.InjectBeforePredict(f) }
