module github.com/gyrehq/gyre/services/deployer

go 1.26.8
