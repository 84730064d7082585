package db

import "github.com/go-sql-driver/mysql"

func parseForTest(dsn string) (string, error) {
	c, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "", err
	}
	return c.Passwd, nil
}
